// Writes the reference pages generated from the code (npm run docs, after npm run build):
// test/options.test.ts and test/reference-docs.test.ts fail when a page differs from what the code would write.
import fs from 'node:fs';
import { renderFlagsReference } from '../dist/src/config.js';
import { restRoutes } from '../dist/src/http/rest.js';
import { usage } from '../dist/src/operator-cli/args.js';
import { renderCliReference, renderEventsReference, renderRestReference, replaceGenerated } from './reference.mjs';

fs.mkdirSync('docs/reference', { recursive: true });
fs.writeFileSync('docs/reference/server-flags.md', renderFlagsReference());
console.log('wrote docs/reference/server-flags.md');

/** Rewrites the generated block of a hand-written page; the rest of the page is left as it is. */
function regenerate(page, block, content) {
  fs.writeFileSync(page, replaceGenerated(fs.readFileSync(page, 'utf8'), block, content));
  console.log(`wrote the ${block} block of ${page}`);
}
regenerate('docs/reference/cli.md', 'commands', renderCliReference(usage));
regenerate('docs/reference/rest.md', 'routes', renderRestReference(restRoutes));
// Types only, so read from the source rather than the build.
regenerate('docs/reference/events.md', 'events', renderEventsReference(fs.readFileSync('src/model/event-map.ts', 'utf8')));
