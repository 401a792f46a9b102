/** At most this many names from one pattern: a fleet, not a typo's worth of machines. */
export const maxPatternNames = 10_000;

/**
 * The names a pattern like `rack3-node{01..40}` stands for, in order: one `{FIRST..LAST}` range of
 * whole numbers, padded with zeros to FIRST's width when FIRST has leading zeros (`{01..40}`: 01,
 * 02, ... 40). A string when the pattern is not one, saying why; each name's own rule is the caller's.
 */
export function expandNamePattern(pattern: string): string[] | string {
  const ranges = [...pattern.matchAll(/\{(\d+)\.\.(\d+)\}/g)];
  if (ranges.length !== 1 || /[{}]/.test(pattern.replace(ranges[0]![0], '')))
    return 'must hold one range of numbers in braces, e.g. rack3-node{01..40}';
  const [range, firstText, lastText] = ranges[0]! as unknown as [string, string, string];
  const first = Number(firstText);
  const last = Number(lastText);
  if (last < first) return `the range {${firstText}..${lastText}} counts down: give the smaller number first`;
  if (last - first + 1 > maxPatternNames) return `the range {${firstText}..${lastText}} holds more than ${maxPatternNames} names`;
  const width = firstText.startsWith('0') && firstText.length > 1 ? firstText.length : 1;
  const [prefix, suffix] = [pattern.slice(0, ranges[0]!.index), pattern.slice(ranges[0]!.index + range.length)];
  return Array.from({ length: last - first + 1 }, (_, i) => `${prefix}${String(first + i).padStart(width, '0')}${suffix}`);
}
