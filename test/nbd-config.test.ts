import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { configSafePathPattern, exportNamePattern, isReservedExportName } from '../src/rules/names.js';
import {
  exportsVisibleTo,
  firstExportFd,
  placeholderSection,
  renderNbdServerConfig,
  reportFd,
  socketSentPath,
  linkAtomically,
  writeFileAtomically,
  type ServedExport,
} from '../src/supervisor/nbd-config.js';
import { tempDir } from '../testkit/daemon.js';

const safeExport: ServedExport = { id: 1, versionId: 101, name: 'alpha', file: '/srv/images/alpha.img', fd: 20, readonly: true };

interface Section {
  name: string;
  entries: Array<[key: string, value: string]>;
}

/** Reads the text the way GKeyFile does for the subset nbdmux writes: sections, `key = value`, `#` comment lines. */
function parseSections(text: string): Section[] {
  const sections: Section[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const header = /^\[(.*)\]$/.exec(line);
    if (header) {
      sections.push({ name: header[1]!, entries: [] });
      continue;
    }
    const entry = /^([A-Za-z_]+) = (.*)$/.exec(line);
    if (!entry || sections.length === 0) throw new Error(`line nbd-server would misread: ${JSON.stringify(line)}`);
    sections.at(-1)!.entries.push([entry[1]!, entry[2]!]);
  }
  return sections;
}

function section(sections: Section[], name: string): Record<string, string> {
  const found = sections.filter((s) => s.name === name);
  expect(found, `exactly one [${name}] section`).toHaveLength(1);
  const keys = found[0]!.entries.map(([key]) => key);
  // GKeyFile lets the last duplicate key win silently, so a duplicate would hide a setting.
  expect(new Set(keys).size, `no duplicate key in [${name}]`).toBe(keys.length);
  return Object.fromEntries(found[0]!.entries);
}

/**
 * Runs a prerun line the way nbd-server does (system(), so /bin/sh -c) and returns what it wrote
 * to the report descriptor; `verdict`, if any, is the daemon's answer, sent once the report arrives.
 */
function runPrerun(command: string, verdict?: string): Promise<{ code: number | null; report: string }> {
  return new Promise((resolve, reject) => {
    const stdio: Array<'ignore' | 'pipe'> = Array.from({ length: reportFd + 1 }, (_, fd) => (fd === reportFd ? 'pipe' : 'ignore'));
    const child = spawn('/bin/sh', ['-c', command], { stdio, timeout: 10_000 });
    let report = '';
    const pipe = child.stdio[reportFd] as Duplex;
    pipe.on('data', (chunk: Buffer) => {
      report += chunk.toString('utf8');
      if (verdict !== undefined) pipe.end(verdict);
      else pipe.end();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, report }));
  });
}

describe('renderNbdServerConfig refuses anything nbd-server could misread', () => {
  const hostileNames: Array<[why: string, name: string]> = [
    ['a closing bracket ends the section header early', 'a]b'],
    ['an opening bracket breaks the section header', 'a[b'],
    ['a newline starts a new line of config', 'a\nb'],
    ['a trailing newline starts a new line of config', 'alpha\n'],
    ['a tab is a control character', 'a\tb'],
    ['a carriage return is a control character', 'a\rb'],
    ['a backslash is an escape', 'a\\b'],
    ['a percent sign is a printf format', 'a%b'],
    ['a hash may start a comment', 'a#b'],
    ['a space is whitespace', 'a b'],
    ['an equals sign separates key and value', 'a=b'],
    ['generic is the global section', 'generic'],
    ['names starting with __ are reserved for the placeholder', '__x'],
    ['the placeholder itself is reserved', placeholderSection],
    ['65 characters is one too many', 'a'.repeat(65)],
    ['an empty name is no section', ''],
    ['a leading dot is not a letter or digit', '.hidden'],
    ['a leading dash is not a letter or digit', '-x'],
    ['a leading underscore is not a letter or digit', '_x'],
    ['non-ASCII letters are outside the safe set', 'café'],
    ['emoji are outside the safe set', 'disk💾'],
  ];

  it.each(hostileNames)('refuses a name where %s: %j', (_why, name) => {
    expect(() => renderNbdServerConfig([{ ...safeExport, name }])).toThrow(/unsafe export name/);
  });

  const hostilePaths: Array<[why: string, file: string]> = [
    ['a relative path breaks after nbd-server chdirs to /', 'images/alpha.img'],
    ['a dot-relative path breaks after nbd-server chdirs to /', './alpha.img'],
    ['an empty path names no file', ''],
    ['the root alone is no file', '/'],
    ['a space is kept or trimmed unpredictably', '/srv/images/my disk.img'],
    ['a trailing space is kept as part of the value', '/srv/images/alpha.img '],
    ['%s in exportname becomes the client IP', '/srv/images/%s.img'],
    ['a lone percent sign is a format', '/srv/images/100%.img'],
    ['a hash after a value stays part of it', '/srv/images/a#b.img'],
    ['\\s is unescaped to a space', '/srv/images/a\\sb.img'],
    ['a backslash is an escape', '/srv/images/a\\b.img'],
    ['a newline starts a new config line', '/srv/images/a.img\nreadonly = false'],
    ['a tab is whitespace', '/srv/images/a\tb.img'],
    ['an equals sign is outside the safe set', '/srv/images/a=b.img'],
    ['a semicolon is a GKeyFile list separator', '/srv/images/a;b.img'],
    ['a bracket is outside the safe set', '/srv/images/[a].img'],
    ['a quote is outside the safe set', "/srv/images/it's.img"],
    ['non-ASCII is outside the safe set', '/srv/images/café.img'],
  ];

  it.each(hostilePaths)('refuses a path where %s: %j', (_why, file) => {
    expect(() => renderNbdServerConfig([{ ...safeExport, file }])).toThrow(/unsafe export path/);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1])(
    'refuses export id %s, which could not name the export in a prerun report',
    (id) => {
      expect(() => renderNbdServerConfig([{ ...safeExport, id }])).toThrow(/invalid export id/);
    },
  );

  it.each([0, -1, 1.5, Number.NaN])('refuses version id %s, which could not name the version in a prerun report', (versionId) => {
    expect(() => renderNbdServerConfig([{ ...safeExport, versionId }])).toThrow(/invalid version id/);
  });

  it('refuses the whole set when only the last export is unsafe, so no partial config is ever produced', () => {
    const exports = [
      safeExport,
      { ...safeExport, id: 2, versionId: 102, name: 'beta' },
      { ...safeExport, id: 3, versionId: 103, name: 'bad name' },
    ];
    expect(() => renderNbdServerConfig(exports)).toThrow(/unsafe export name "bad name"/);
  });
});

describe('the name and path patterns behind the renderer', () => {
  it.each(['a', '0', 'A.b_c-d', 'a'.repeat(64), 'generic2', 'Generic', 'x__y', 'debian-12.5_amd64'])('accepts the safe name %j', (name) => {
    expect(exportNamePattern.test(name) && !isReservedExportName(name)).toBe(true);
    expect(() => renderNbdServerConfig([{ ...safeExport, name }])).not.toThrow();
  });

  it.each(['/a', '/srv/images/alpha.img', '/srv/img+extra/disk_1-2.raw', '//srv//images/alpha.img'])('accepts the safe path %j', (file) => {
    expect(configSafePathPattern.test(file)).toBe(true);
    expect(() => renderNbdServerConfig([{ ...safeExport, file }])).not.toThrow();
  });

  it('leaves `..` to the image-root check: the pattern only guards what the config file can express', () => {
    // inspectImage resolves the real path before it is ever rendered, so `..` never reaches the file in practice.
    expect(configSafePathPattern.test('/srv/images/../../etc/shadow')).toBe(true);
  });

  it('reserves exactly generic and the __ prefix', () => {
    expect(['generic', '__x', '__', placeholderSection].map(isReservedExportName)).toEqual([true, true, true, true]);
    expect(['generic2', 'Generic', '_x', 'x__'].map(isReservedExportName)).toEqual([false, false, false, false]);
  });
});

describe('renderNbdServerConfig output for a safe set of exports', () => {
  const exports: ServedExport[] = [
    { id: 1, versionId: 101, name: 'alpha', file: '/srv/images/alpha.img', fd: 31, readonly: true },
    { id: 7, versionId: 107, name: 'beta-2.x', file: '/srv/images/b+c/beta_2.img', fd: 22, readonly: false },
    { id: 12, versionId: 112, name: 'alpha-twin', file: '/srv/images/alpha.img', fd: 27, readonly: true },
  ];
  const text = renderNbdServerConfig(exports);
  const sections = parseSections(text);

  it('starts with [generic]: inetd mode, loopback only, listing allowed', () => {
    expect(sections[0]!.name).toBe('generic');
    expect(section(sections, 'generic')).toEqual({ port: '0', listenaddr: '127.0.0.1', allowlist: 'true' });
  });

  it('has the hidden placeholder that refuses every client, so nbd-server starts with no real export', () => {
    expect(section(sections, placeholderSection)).toEqual({ exportname: '/nonexistent', force_tls: 'true' });
  });

  it('has one section per export, in the given order, and nothing else', () => {
    expect(sections.map((s) => s.name)).toEqual(['generic', placeholderSection, 'alpha', 'beta-2.x', 'alpha-twin']);
  });

  it.each(exports.map((exp, index) => ({ ...exp, index })))(
    'writes export $name as the descriptor at its position ($index), never its path, with its mode, a prerun naming id $id and version $versionId and the postrun',
    (exp) => {
      const values = section(sections, exp.name);
      expect(Object.keys(values).sort()).toEqual(['exportname', 'postrun', 'prerun', 'readonly']);
      // The serving process inherits the pinned descriptors in config order from firstExportFd on:
      // opening its own /proc/self/fd/N opens the judged file whatever the path leads to now.
      expect(values.exportname).toBe(`/proc/self/fd/${firstExportFd + exp.index}`);
      expect(text).toContain(`# ${exp.file}, as judged at registration\n[${exp.name}]\n`);
      expect(values.readonly).toBe(exp.readonly ? 'true' : 'false');
      expect(values.prerun).toMatch(new RegExp(`\\becho ${exp.id} ${exp.versionId} >&${reportFd}`));
      // Reports the end of the connection with the bytes the client received (src/supervisor/report-pipe.ts reads the final counts then).
      expect(values.postrun).toMatch(
        new RegExp(
          `\\becho ended \\$\\(${socketSentPath} 2>/dev/null\\) >&${reportFd} && while read -r reply <&${reportFd}; do .*; sleep \\d+; exit 0$`,
        ),
      );
    },
  );

  it.each(exports)(
    'gives export $name a prerun that, run as nbd-server runs it, reports exactly its id and version and succeeds',
    async (exp) => {
      const { code, report } = await runPrerun(section(sections, exp.name).prerun!);
      expect({ code, report }).toEqual({ code: 0, report: `${exp.id} ${exp.versionId}\n` });
    },
  );

  it('contains no % anywhere: nbd-server treats prerun as a printf format', () => {
    expect(text).not.toContain('%');
  });

  it('ends with a newline and holds no control character besides newlines', () => {
    expect(text.endsWith('\n')).toBe(true);
    expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f]/);
  });

  it('is deterministic: the same exports give byte-identical text', () => {
    const again = renderNbdServerConfig(exports.map((exp) => ({ ...exp })));
    expect(again).toBe(text);
  });

  it('does not modify the exports it is given', () => {
    const frozen = Object.freeze(exports.map((exp) => Object.freeze({ ...exp })));
    expect(renderNbdServerConfig(frozen)).toBe(text);
  });

  it('renders an empty set as [generic] plus the placeholder, which nbd-server needs to start at all', () => {
    expect(parseSections(renderNbdServerConfig([])).map((s) => s.name)).toEqual(['generic', placeholderSection]);
  });
});

describe('exportsVisibleTo: a client is shown only the exports it may use', () => {
  const exports: ServedExport[] = [
    { id: 1, versionId: 101, name: 'both', file: '/srv/images/b.img', fd: 21, readonly: true, allow: ['10.1.2.3', '127.0.0.2'] },
    { id: 2, versionId: 102, name: 'lab', file: '/srv/images/l.img', fd: 22, readonly: true, allow: ['10.1.0.0/16'] },
    { id: 3, versionId: 103, name: 'one', file: '/srv/images/o.img', fd: 23, readonly: true, allow: ['127.0.0.2/32'] },
    { id: 4, versionId: 104, name: 'public', file: '/srv/images/p.img', fd: 24, readonly: true },
    { id: 5, versionId: 105, name: 'public-empty-list', file: '/srv/images/p.img', fd: 25, readonly: true, allow: [] },
    { id: 6, versionId: 106, name: 'v6', file: '/srv/images/v.img', fd: 26, readonly: true, allow: ['2001:db8::/32'] },
  ];

  it.each([
    ['127.0.0.1', ['public', 'public-empty-list']],
    ['127.0.0.2', ['both', 'one', 'public', 'public-empty-list']],
    ['::ffff:127.0.0.2', ['both', 'one', 'public', 'public-empty-list']],
    ['10.1.200.7', ['lab', 'public', 'public-empty-list']],
    ['10.1.2.3', ['both', 'lab', 'public', 'public-empty-list']],
    ['10.2.0.1', ['public', 'public-empty-list']],
    ['2001:db8::5', ['public', 'public-empty-list', 'v6']],
    ['2001:db9::5', ['public', 'public-empty-list']],
  ])('shows %s exactly %j, in the given order', (client, names) => {
    expect(exportsVisibleTo(exports, client).map((exp) => exp.name)).toEqual(names);
  });

  it('renders a client its own config: no section of an export it may not use, descriptors numbered in its own order', () => {
    const visible = exportsVisibleTo(exports, '10.1.200.7');
    const sections = parseSections(renderNbdServerConfig(visible));
    expect(sections.map((s) => s.name)).toEqual(['generic', placeholderSection, 'lab', 'public', 'public-empty-list']);
    expect(visible.map((exp) => section(sections, exp.name).exportname)).toEqual(
      [0, 1, 2].map((n) => `/proc/self/fd/${firstExportFd + n}`),
    );
  });

  // Never reached through nbd-server since hidden exports are left out of a client's config;
  // kept as a second line of defence, so shown here on the prerun itself.
  it.each([
    ['allow\n', 0],
    ['deny\n', 1],
    ['', 1],
  ])('gives an export with a list a prerun that waits for the verdict: %j exits %i', async (verdict, code) => {
    const prerun = section(parseSections(renderNbdServerConfig([exports[2]!])), 'one').prerun!;
    expect(await runPrerun(prerun, verdict)).toEqual({ code, report: '3 103\n' });
  });

  it('numbers descriptors right after the report pipe, where the spawner puts them', () => {
    expect(firstExportFd).toBe(reportFd + 1);
  });
});

describe('writeFileAtomically', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  function freshDir(): string {
    const dir = tempDir('nbdmux-atomic-');
    dirs.push(dir);
    return dir;
  }

  it('creates the file with exactly the given text and leaves no temp file behind', () => {
    const dir = freshDir();
    const file = path.join(dir, 'nbd-server.conf');
    writeFileAtomically(file, 'first\n');
    expect(fs.readFileSync(file, 'utf8')).toBe('first\n');
    expect(fs.readdirSync(dir)).toEqual(['nbd-server.conf']);
  });

  it('replaces the content whole, also with shorter text, and leaves no temp file behind', () => {
    const dir = freshDir();
    const file = path.join(dir, 'nbd-server.conf');
    writeFileAtomically(file, 'a much longer first version\n'.repeat(100));
    writeFileAtomically(file, 'short\n');
    expect(fs.readFileSync(file, 'utf8')).toBe('short\n');
    expect(fs.readdirSync(dir)).toEqual(['nbd-server.conf']);
  });

  it('swaps in a new file rather than rewriting in place: a reader that opened the old one still reads it whole', () => {
    const dir = freshDir();
    const file = path.join(dir, 'nbd-server.conf');
    writeFileAtomically(file, 'old set\n');
    const reader = fs.openSync(file, 'r');
    try {
      writeFileAtomically(file, 'new set\n');
      const buffer = Buffer.alloc(64);
      const bytes = fs.readSync(reader, buffer, 0, buffer.length, 0);
      expect(buffer.subarray(0, bytes).toString('utf8')).toBe('old set\n');
    } finally {
      fs.closeSync(reader);
    }
    expect(fs.readFileSync(file, 'utf8')).toBe('new set\n');
  });

  it('round-trips a rendered config byte for byte', () => {
    const dir = freshDir();
    const file = path.join(dir, 'nbd-server.conf');
    const text = renderNbdServerConfig([safeExport]);
    writeFileAtomically(file, text);
    expect(fs.readFileSync(file, 'utf8')).toBe(text);
    expect(fs.readdirSync(dir)).toEqual(['nbd-server.conf']);
  });

  it('throws, writing nothing, when the directory does not exist', () => {
    const dir = freshDir();
    expect(() => writeFileAtomically(path.join(dir, 'missing', 'nbd-server.conf'), 'x\n')).toThrow(/ENOENT/);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

describe('linkAtomically', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('gives the file a second name, replacing what that name held, with no copy and no temp file left, even after a crashed run', () => {
    const dir = tempDir('nbdmux-link-');
    dirs.push(dir);
    const readable = path.join(dir, 'nbd-server.conf');
    const [first, second] = ['nbd-server.conf.aaaa', 'nbd-server.conf.bbbb'].map((name) => path.join(dir, name));
    writeFileAtomically(first!, 'old set\n');
    writeFileAtomically(second!, 'new set\n');
    // A temp file of this pid, as a run killed mid-change would leave it.
    fs.writeFileSync(`${readable}.${process.pid}.tmp`, 'left behind\n');
    linkAtomically(first!, readable);
    const reader = fs.openSync(readable, 'r');
    try {
      linkAtomically(second!, readable);
      expect(fs.readFileSync(reader, 'utf8')).toBe('old set\n');
    } finally {
      fs.closeSync(reader);
    }
    expect(fs.statSync(readable).ino).toBe(fs.statSync(second!).ino);
    expect(fs.readdirSync(dir).sort()).toEqual(['nbd-server.conf', 'nbd-server.conf.aaaa', 'nbd-server.conf.bbbb']);
  });

  it('throws, leaving the name as it was, when the file to link is missing', () => {
    const dir = tempDir('nbdmux-link-');
    dirs.push(dir);
    const readable = path.join(dir, 'nbd-server.conf');
    writeFileAtomically(readable, 'current set\n');
    expect(() => linkAtomically(path.join(dir, 'nbd-server.conf.gone'), readable)).toThrow(/ENOENT/);
    expect(fs.readFileSync(readable, 'utf8')).toBe('current set\n');
    expect(fs.readdirSync(dir)).toEqual(['nbd-server.conf']);
  });
});
