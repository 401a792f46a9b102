// The reference pages' generated blocks, each rendered from the one table in the code that owns
// it: `npm run docs` (scripts/write-docs.mjs) writes them, test/reference-docs.test.ts fails when a
// committed page differs. Pure: the caller hands in the table (or, for events, the source text).
import ts from 'typescript';

/** The page with the block named `name` (between its BEGIN and END markers) replaced by `content`. */
export function replaceGenerated(page, name, content) {
  const begin = `<!-- BEGIN generated: ${name} -->`;
  const end = `<!-- END generated: ${name} -->`;
  const from = page.indexOf(begin);
  const to = page.indexOf(end);
  if (from < 0 || to < from) throw new Error(`no "${begin}" ... "${end}" block in the page: put the markers where the block goes`);
  return `${page.slice(0, from + begin.length)}\n${content}\n${page.slice(to)}`;
}

/** The CLI's reference block: its `--help`, which args.ts writes from its command table. */
export function renderCliReference(usage) {
  return ['```', usage.trimEnd(), '```'].join('\n');
}

const cell = (text) => text.replaceAll('|', '\\|');

/** The REST routes block: one row per method of each route in src/http/rest.ts's table. */
export function renderRestReference(routes) {
  const rows = routes.flatMap((route) =>
    Object.entries(route.docs).flatMap(([method, docs]) =>
      docs.map(
        (doc) =>
          `| ${method === 'GET' ? 'GET, HEAD' : method} | \`${route.path}${doc.query ?? ''}\` | ${cell(doc.body ?? '')} | ${cell(doc.returns)} |`,
      ),
    ),
  );
  return ['| Method | Path | Body | Returns |', '|---|---|---|---|', ...rows].join('\n');
}

/**
 * The events block, read from src/model/event-map.ts's `EventDetails` interface: each event
 * type with its details (as the type writes them) and its doc comment.
 */
export function renderEventsReference(source) {
  const file = ts.createSourceFile('event-map.ts', source, ts.ScriptTarget.ES2022, true);
  const details = file.statements.find((node) => ts.isInterfaceDeclaration(node) && node.name.text === 'EventDetails');
  if (!details) throw new Error('event-map.ts has no EventDetails interface');
  const rows = details.members.map((member) => {
    const name = member.name.getText(file).replace(/^'|'$/g, '');
    const type = member.type.getText(file).replace(/\s+/g, ' ').replace(/;? }/g, ' }');
    const doc = ts
      .getJSDocCommentsAndTags(member)
      .map((comment) => ts.getTextOfJSDocComment(comment.comment) ?? '')
      .join(' ')
      .replace(/\s+/g, ' ');
    return `| \`${name}\` | \`${cell(type)}\` | ${cell(doc)} |`;
  });
  // The shapes the details name (ActedBy, Repeated, MachineStage...), as the file writes them.
  const shapes = file.statements
    .filter((node) => node !== details && !ts.isImportDeclaration(node))
    .map((node) => node.getFullText(file).trim());
  return [
    '| Event | Details | Meaning |',
    '|---|---|---|',
    ...rows,
    '',
    'The shapes the details name:',
    '',
    '```ts',
    shapes.join('\n\n'),
    '```',
  ].join('\n');
}
