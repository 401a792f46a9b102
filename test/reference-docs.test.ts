import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { restRoutes } from '../src/http/rest.js';
import { usage } from '../src/operator-cli/args.js';
import { renderCliReference, renderEventsReference, renderRestReference, replaceGenerated } from '../scripts/reference.mjs';

/**
 * The reference pages whose blocks come from the code's own tables (npm run docs writes them):
 * a page that says something the code no longer does fails here, not in an operator's hands.
 */
describe('the generated reference blocks', () => {
  const pages = [
    { page: 'docs/reference/cli.md', block: 'commands', render: () => renderCliReference(usage), source: 'src/operator-cli/args.ts' },
    { page: 'docs/reference/rest.md', block: 'routes', render: () => renderRestReference(restRoutes), source: 'src/http/rest.ts' },
    {
      page: 'docs/reference/events.md',
      block: 'events',
      render: () => renderEventsReference(fs.readFileSync('src/model/event-map.ts', 'utf8')),
      source: 'src/model/event-map.ts',
    },
  ];

  it.each(pages)('$page says what $source does, word for word (npm run docs rewrites it)', ({ page, block, render }) => {
    const text = fs.readFileSync(page, 'utf8');
    expect(text).toBe(replaceGenerated(text, block, render()));
  });

  it('lists every REST route, with every method the router answers', () => {
    const block = renderRestReference(restRoutes);
    for (const route of restRoutes) {
      for (const method of Object.keys(route.docs)) expect(block).toMatch(new RegExp(`^\\| ${method}.*\\| \`${route.path}[\`[]`, 'm'));
    }
  });

  it('lists every event type of the event map', () => {
    const source = fs.readFileSync('src/model/event-map.ts', 'utf8');
    const types = [...source.matchAll(/^ {2}'([a-z-]+\.[a-z-]+)': /gm)].map((match) => match[1]);
    expect(types).toContain('machine.stage');
    const block = renderEventsReference(source);
    expect(block.split('\n').flatMap((line) => /^\| `([a-z-]+\.[a-z-]+)` \|/.exec(line)?.[1] ?? [])).toEqual(types);
  });

  it('refuses a page without the markers, saying where they go', () => {
    expect(() => replaceGenerated('# a page\n', 'routes', 'x')).toThrow(/<!-- BEGIN generated: routes -->.*put the markers/);
  });
});
