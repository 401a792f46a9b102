/**
 * Orders kernel versions as dpkg orders version strings (Debian's `linux-version sort`):
 * digit runs compare as numbers, other runs character by character with letters before
 * non-letters and `~` before everything, even the end. So 6.1.0-9-amd64 < 6.1.0-50-amd64
 * < 6.1.0-57-amd64, and 6.1.0~rc1 < 6.1.0.
 */
export function compareKernelVersions(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let firstDiff = 0;
    while ((i < a.length && !isDigit(a[i]!)) || (j < b.length && !isDigit(b[j]!))) {
      const ac = i < a.length && !isDigit(a[i]!) ? order(a[i]!) : 0;
      const bc = j < b.length && !isDigit(b[j]!) ? order(b[j]!) : 0;
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    while (a[i] === '0') i++;
    while (b[j] === '0') j++;
    while (i < a.length && isDigit(a[i]!) && j < b.length && isDigit(b[j]!)) {
      if (firstDiff === 0) firstDiff = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (i < a.length && isDigit(a[i]!)) return 1;
    if (j < b.length && isDigit(b[j]!)) return -1;
    if (firstDiff !== 0) return firstDiff;
  }
  return 0;
}

/** The newest of `versions` by dpkg's order; undefined when there is none. */
export function newestKernelVersion(versions: readonly string[]): string | undefined {
  return [...versions].sort(compareKernelVersions).at(-1);
}

function isDigit(c: string): boolean {
  return c >= '0' && c <= '9';
}

/** dpkg's `order`: `~` first, then the end of the string, then letters, then everything else. */
function order(c: string): number {
  if (c === '~') return -1;
  if (/[A-Za-z]/.test(c)) return c.charCodeAt(0);
  return c.charCodeAt(0) + 256;
}
