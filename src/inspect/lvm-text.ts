/** A value of LVM2's text metadata: a number, a string, a list, or a section of named values. */
export type LvmValue = number | string | LvmValue[] | LvmSection;
export type LvmSection = Map<string, LvmValue>;

/** Sections nested deeper than this are no VG metadata LVM writes (it nests 5 deep). */
const maxDepth = 16;
const maxValues = 100_000;

/**
 * Parses LVM2's text metadata format (lib/format_text/import.c's grammar: `name = value`,
 * `name { ... }`, values numbers, "strings" with \" and \\ escapes, or [lists]; `#` comments).
 * Bounded in depth and count; anything else is an Error saying where.
 */
export function parseLvmText(text: string): LvmSection {
  let at = 0;
  let values = 0;
  const fail = (why: string): never => {
    const line = text.slice(0, at).split('\n').length;
    throw new Error(`line ${line}: ${why}`);
  };
  const skip = () => {
    for (;;) {
      while (at < text.length && /\s/.test(text[at]!)) at++;
      if (text[at] !== '#') return;
      while (at < text.length && text[at] !== '\n') at++;
    }
  };
  const name = () => {
    const match = /^[A-Za-z0-9_.+-]+/.exec(text.slice(at, at + 256));
    if (!match) return fail(`expected a name, found ${JSON.stringify(text.slice(at, at + 10))}`);
    at += match[0].length;
    return match[0];
  };
  const value = (depth: number): LvmValue => {
    if (++values > maxValues) fail(`more than ${maxValues} values`);
    skip();
    const c = text[at];
    if (c === '"') {
      let out = '';
      for (at++; at < text.length && text[at] !== '"'; at++) out += text[at] === '\\' ? (text[++at] ?? '') : text[at];
      if (at >= text.length) fail('a string never ends');
      at++;
      return out;
    }
    if (c === '[') {
      if (depth >= maxDepth) fail('lists nested too deep');
      at++;
      const list: LvmValue[] = [];
      for (;;) {
        skip();
        if (text[at] === ']') {
          at++;
          return list;
        }
        list.push(value(depth + 1));
        skip();
        if (text[at] === ',') at++;
        else if (text[at] !== ']') fail('expected "," or "]" in a list');
      }
    }
    const number = /^-?\d+(\.\d+)?/.exec(text.slice(at, at + 32));
    if (!number) return fail(`expected a value, found ${JSON.stringify(text.slice(at, at + 10))}`);
    at += number[0].length;
    return Number(number[0]);
  };
  const section = (depth: number, closing: boolean): LvmSection => {
    if (depth > maxDepth) fail('sections nested too deep');
    const out: LvmSection = new Map();
    for (;;) {
      skip();
      if (at >= text.length) {
        if (closing) fail('a section never ends');
        return out;
      }
      if (text[at] === '}') {
        if (!closing) fail('a "}" closes nothing');
        at++;
        return out;
      }
      const key = name();
      skip();
      if (text[at] === '{') {
        at++;
        out.set(key, section(depth + 1, true));
      } else if (text[at] === '=') {
        at++;
        out.set(key, value(depth));
      } else {
        fail(`expected "=" or "{" after ${key}`);
      }
    }
  };
  return section(0, false);
}

export function sectionOf(section: LvmSection, key: string): LvmSection | null {
  const value = section.get(key);
  return value instanceof Map ? value : null;
}

export function numberOf(section: LvmSection, key: string): number | null {
  const value = section.get(key);
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

export function stringOf(section: LvmSection, key: string): string | null {
  const value = section.get(key);
  return typeof value === 'string' ? value : null;
}
