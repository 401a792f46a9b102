import { describe, expect, it } from 'vitest';
import { cleanText } from '../src/untrusted-text.js';

describe('cleanText', () => {
  it.each<[what: string, text: string, cleaned: string]>([
    ['a title change (OSC 0, ended by BEL)', 'vmlinuz-\x1b]0;owned\x07', 'vmlinuz-\\u001b]0;owned\\u0007'],
    ['a cursor move and a screen clear (CSI)', 'a\x1b[2J\x1b[Hb', 'a\\u001b[2J\\u001b[Hb'],
    ['the one-byte CSI and the rest of C1', '\x9b2J\x85\x80\x9f', '\\u009b2J\\u0085\\u0080\\u009f'],
    ['NUL, backspace, carriage return, tab, DEL', 'a\0b\bc\rd\te\x7f', 'a\\u0000b\\u0008c\\u000dd\\u0009e\\u007f'],
    ['a newline, in a one-line field', 'one\ntwo', 'one\\u000atwo'],
    [
      'bidi overrides, embeddings, isolates and marks',
      '\u202egpj.exe\u202c \u202a\u202b\u202d \u2066\u2067\u2068\u2069 \u200e\u200f\u061c',
      '\\u202egpj.exe\\u202c \\u202a\\u202b\\u202d \\u2066\\u2067\\u2068\\u2069 \\u200e\\u200f\\u061c',
    ],
    ['the line and paragraph separators', 'a\u2028b\u2029c', 'a\\u2028b\\u2029c'],
    [
      'text that holds none',
      'Debian GNU/Linux 12 (bookworm) — ünïcödé, 日本語, emoji 🐧, a \\ backslash',
      'Debian GNU/Linux 12 (bookworm) — ünïcödé, 日本語, emoji 🐧, a \\ backslash',
    ],
  ])('writes out %s', (_what, text, cleaned) => {
    expect(cleanText(text)).toBe(cleaned);
  });

  it('keeps the newlines of a multi-line field, and nothing else', () => {
    expect(cleanText('root at 3.2s\n\x1b[31mfailed\x1b[0m\r\n', { multiline: true })).toBe(
      'root at 3.2s\n\\u001b[31mfailed\\u001b[0m\\u000d\n',
    );
  });

  it('turns JSON text into the same JSON: its escape is JSON’s own', () => {
    const value = { reason: 'a\x9bb\u202ec\u2028d', nested: ['\x1b]0;x\x07'] };
    const json = JSON.stringify(value, null, 2);
    expect(JSON.parse(cleanText(json, { multiline: true }))).toEqual(value);
    expect(cleanText(json, { multiline: true })).not.toMatch(/[\u0080-\u009f\u202e\u2028]/);
  });
});
