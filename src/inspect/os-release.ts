/**
 * The name an os-release file (os-release(5): KEY=value lines, values optionally quoted with
 * shell escapes) gives its system: PRETTY_NAME, else NAME VERSION_ID, else ID; null: none.
 */
export function osNameOf(text: string): string | null {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (match) fields.set(match[1]!, unquote(match[2]!));
  }
  const name =
    fields.get('PRETTY_NAME') || [fields.get('NAME'), fields.get('VERSION_ID')].filter(Boolean).join(' ') || fields.get('ID') || '';
  // Shown in the dashboard and a terminal: no control characters, bounded.
  const printable = name.replace(/[\p{Cc}]/gu, '').slice(0, 200);
  return printable === '' ? null : printable;
}

function unquote(value: string): string {
  const quoted = /^(["'])(.*)\1$/.exec(value);
  if (!quoted) return value;
  return quoted[1] === "'" ? quoted[2]! : quoted[2]!.replace(/\\(.)/g, '$1');
}
