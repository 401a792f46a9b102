import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * Every relative link in README.md and docs/ leads to a file, and every #anchor to a heading of
 * it: the docs are read in order, page to page, so a dead link is a dead end.
 */
const pages = ['README.md', ...fs.readdirSync('docs', { recursive: true, encoding: 'utf8' }).map((file) => path.join('docs', file))].filter(
  (file) => file.endsWith('.md'),
);

/** The text outside fenced code blocks and inline code, where a `[x](y)` is not a link. */
function prose(text: string): string {
  return text.replace(/^```[\s\S]*?^```$/gm, '').replace(/`[^`\n]*`/g, '');
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .replace(/`/g, '')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\- ]/gu, '')
    .replace(/ /g, '-');
}

function anchors(file: string): Set<string> {
  const text = fs.readFileSync(file, 'utf8').replace(/^```[\s\S]*?^```$/gm, '');
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const [, heading] of text.matchAll(/^#{1,6} (.+)$/gm)) {
    const base = slug(heading!);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  return result;
}

function links(file: string): string[] {
  return [...prose(fs.readFileSync(file, 'utf8')).matchAll(/\]\(([^)\s]+)\)/g)].map((match) => match[1]!);
}

describe('the docs', () => {
  it('make the GitHub anchor of a heading', () => {
    expect(slug("The image's own kernel")).toBe('the-images-own-kernel');
    expect(slug('Monitoring: `GET /metrics`')).toBe('monitoring-get-metrics');
    expect(slug('7. Watch it boot')).toBe('7-watch-it-boot');
  });

  it('are found: README.md and the pages under docs/', () => {
    expect(pages).toContain('docs/getting-started.md');
    expect(pages).toContain('docs/reference/server-flags.md');
  });

  it.each(pages)('%s: every relative link leads to a file and every #anchor to a heading of it', (page) => {
    const dead: string[] = [];
    for (const link of links(page)) {
      if (/^[a-z]+:/i.test(link)) continue; // http(s), mailto: not ours to check offline
      const [target = '', anchor] = link.split('#');
      const file = target === '' ? page : path.join(path.dirname(page), target);
      if (!fs.existsSync(file)) dead.push(`${link}: no file ${file}`);
      else if (anchor !== undefined && !anchors(file).has(anchor)) dead.push(`${link}: no heading "#${anchor}" in ${file}`);
    }
    expect(dead).toEqual([]);
  });
});
