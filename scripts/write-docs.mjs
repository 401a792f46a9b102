// Writes the reference pages generated from the code (npm run docs, after npm run build):
// test/options.test.ts fails when a page differs from what the code would write.
import fs from 'node:fs';
import { renderFlagsReference } from '../dist/src/config.js';

fs.mkdirSync('docs/reference', { recursive: true });
fs.writeFileSync('docs/reference/server-flags.md', renderFlagsReference());
console.log('wrote docs/reference/server-flags.md');
