import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient, type NbdmuxClient } from '../src/client.js';
import { killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256, startSlowReader } from '../testkit/nbd.js';
import { freePort } from '../testkit/ports.js';
import { runText, startProcess } from '../testkit/process.js';

const cli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));
const { version } = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of an operator who has set nothing but what the test gives. */
function cliEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const { NBDMUX_URL: _url, NBDMUX_ADMIN_PASSWORD: _password, ...rest } = process.env;
  return { ...rest, ...env };
}

/** Runs the built `nbdmux` bin as an operator or script would. */
async function nbdmux(args: string[], env: Record<string, string> = {}, cwd?: string): Promise<CliResult> {
  const { code, stdout, stderr } = await runText(process.execPath, [cli, ...args], { env: cliEnv(env), cwd, timeoutMs: 20_000 });
  return { code, stdout, stderr };
}

const longRunning = new Set<ChildProcess>();
afterAll(() => {
  // A failed test may leave a watch running; it would retry its connection forever.
  for (const child of longRunning) child.kill('SIGKILL');
});

/** A long-running `nbdmux` (watch) whose output the test reads as it comes. */
function startCli(args: string[], env: Record<string, string>, command = process.execPath, commandArgs = [cli, ...args]) {
  const started = startProcess(command, commandArgs, { env: cliEnv(env), stdin: 'pipe' });
  longRunning.add(started.child);
  started.child.on('exit', () => longRunning.delete(started.child));
  return started;
}

function expectOneLineFailure(result: CliResult, exitCode: 1 | 2, message: RegExp) {
  expect(result.code, result.stderr).toBe(exitCode);
  expect(result.stdout).toBe('');
  expect(result.stderr.endsWith('\n') && result.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(result.stderr).toMatch(message);
}

describe('the nbdmux operator CLI', () => {
  let daemon: RunningDaemon;
  let client: NbdmuxClient;
  let images: string;
  let env: Record<string, string>;
  const dataDirs: string[] = [];
  beforeAll(async () => {
    daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    client = createNbdmuxClient({ url: daemon.url });
    images = tempDir('nbdmux-images-');
    env = { NBDMUX_URL: daemon.url };
  });
  afterAll(() => killEverything(dataDirs));

  it('adds exports (read-only, --rw, --cow, relative paths), lists them in an aligned table and as JSON', async () => {
    expect(await nbdmux(['ls'], env)).toEqual({ code: 0, stdout: 'no exports; add one with: nbdmux add NAME FILE\n', stderr: '' });

    const image = makeImage(images, 'disk.img', 3 * 1024 * 1024);
    const added = await nbdmux(['add', 'disk', image], env);
    expect(added).toMatchObject({ code: 0, stderr: '' });
    expect(added.stdout).toMatch(
      /^added disk\nname +disk\nstate +serving\nversion +1\nfile +\S+disk\.img\nmode +read-only\nallow +every client the NBD port admits\nsize +3\.0 MiB \(3145728 bytes\)/,
    );
    expect(sha256(await readExport(daemon.nbdUri('disk')))).toBe(sha256(image));

    const more = await Promise.all([
      // Read-write: the one export of its file.
      nbdmux(['add', 'scratch', makeImage(images, 'scratch.img', 3 * 1024 * 1024), '--rw'], env),
      nbdmux(['add', 'overlay', image, '--cow'], env),
      // A relative FILE is taken from the working directory, as any command line tool would.
      nbdmux(['add', 'relative', 'disk.img'], env, images),
      nbdmux(['add', 'lab-only', image, '--allow', '10.1.0.0/16', '--allow', '127.0.0.1'], env),
    ]);
    expect(more.map((result) => result.code)).toEqual([0, 0, 0, 0]);
    expect(more[3].stdout).toMatch(/\nallow +10\.1\.0\.0\/16, 127\.0\.0\.1\n/);
    expect(sha256(await readExport(daemon.nbdUri('lab-only')))).toBe(sha256(image));

    const served = await client.exports.list.query();
    expect(served.map((e) => [e.name, e.readonly, e.cow, e.file])).toEqual([
      ['disk', true, false, fs.realpathSync(image)],
      ['lab-only', true, false, fs.realpathSync(image)],
      ['overlay', true, true, fs.realpathSync(image)],
      ['relative', true, false, fs.realpathSync(image)],
      ['scratch', false, false, fs.realpathSync(path.join(images, 'scratch.img'))],
    ]);

    const listed = await nbdmux(['ls'], env);
    expect(listed.code).toBe(0);
    const [header, ...rows] = listed.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^NAME +STATE +MODE +VER +SIZE +CONNS +FILE$/);
    const start = (column: string) => header!.indexOf(column);
    const end = (column: string) => header!.indexOf(column) + column.length;
    expect(rows).toHaveLength(served.length);
    for (const [i, exp] of served.entries()) {
      const row = rows[i]!;
      const mode = exp.cow ? 'cow' : exp.readonly ? 'ro' : 'rw';
      expect(row.startsWith(`${exp.name} `)).toBe(true);
      expect(row.slice(start('STATE'))).toMatch(new RegExp(`^${exp.state} `));
      expect(row.slice(start('MODE'))).toMatch(new RegExp(`^${mode} `));
      expect(row.slice(0, end('VER'))).toMatch(/ 1$/);
      expect(row.slice(0, end('SIZE'))).toMatch(/ 3\.0 MiB$/);
      expect(row.slice(0, end('CONNS'))).toMatch(/ 0$/);
      expect(row.slice(start('FILE'))).toBe(exp.file);
    }

    const json = await nbdmux(['--json', 'ls'], env);
    expect(JSON.parse(json.stdout)).toEqual(await client.exports.list.query());
  });

  it('ends quietly with 0 when what reads its output goes away (nbdmux --json show X | head), whatever the command', async () => {
    const readerGone = (args: string[]) =>
      new Promise<CliResult>((resolve, reject) => {
        const child = spawn(process.execPath, [cli, ...args], { env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
        // The read end closed before the CLI writes a byte: what `head` does once it has its lines, made certain.
        child.stdout.destroy();
        let stderr = '';
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, stdout: '', stderr });
        });
      });
    const commands = [
      ['--json', 'show', 'lab-only'],
      ['show', 'lab-only'],
      ['ls'],
      ['--json', 'ls'],
      ['connections'],
      ['health'],
      ['versions', 'lab-only'],
      ['machines', 'list'],
      ['watch'],
      ['watch', '--json'],
      ['--help'],
    ];
    const results = await Promise.all(commands.map(readerGone));
    for (const [i, result] of results.entries()) expect(result, commands[i]!.join(' ')).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('shows an export with its live connections, and removes it: draining, then --force', async () => {
    const reader = startSlowReader(daemon.nbdUri('disk'), path.join(images, 'stop-show-reader'));
    await reader.connected;
    await waitFor('the daemon to count the reader', async () =>
      (await client.exports.get.query({ name: 'disk' })).connections === 1 ? true : undefined,
    );

    const shown = await nbdmux(['show', 'disk'], env);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(
      /^name +disk\n(.*\n)*connections +1\n\nID +EXPORT +CLIENT +PID +OPENED +FOR +SENT +STATE\n +\d+ +disk +127\.0\.0\.1:\d+ +\d+ .* live/,
    );
    const shownJson = JSON.parse((await nbdmux(['show', 'disk', '--json'], env)).stdout);
    expect(shownJson.exports).toMatchObject([{ name: 'disk', state: 'serving', connections: 1 }]);
    expect(shownJson.connections).toMatchObject([{ exportName: 'disk', clientAddress: '127.0.0.1', live: true }]);

    expect(await nbdmux(['rm', 'disk'], env)).toEqual({
      code: 0,
      stdout: 'removed disk; 1 live connection(s) draining ("nbdmux rm --force disk" cuts them)\n',
      stderr: '',
    });
    expect((await nbdmux(['ls'], env)).stdout).toMatch(/\ndisk +removed, draining +ro /);
    expect((await nbdmux(['show', 'disk'], env)).stdout).toMatch(
      /^name +disk\nstate +removed at \S+ \S+, draining \(its live connections finish\)\n/,
    );
    expectOneLineFailure(
      await nbdmux(['rm', 'disk'], env),
      1,
      /^nbdmux rm: export "disk" is already removed and draining 1 connection\(s\); "nbdmux rm --force disk" cuts them\n$/,
    );

    expect(await nbdmux(['rm', '--force', 'disk'], env)).toEqual({
      code: 0,
      stdout: 'removed disk; cut 1 live connection(s)\n',
      stderr: '',
    });
    expect((await reader.finish()).code).not.toBe(0);
    expect(await nbdmux(['rm', 'relative', '--json'], env)).toEqual({
      code: 0,
      stdout: `${JSON.stringify({ name: 'relative', killed: 0, draining: 0 }, null, 2)}\n`,
      stderr: '',
    });
    expectOneLineFailure(await nbdmux(['rm', 'disk'], env), 1, /^nbdmux rm: no export named "disk"; "nbdmux ls" lists them\n$/);
    expectOneLineFailure(await nbdmux(['show', 'absent'], env), 1, /^nbdmux show: no export named "absent"; "nbdmux ls" lists them\n$/);
  });

  it('lists connections newest first, the live ones alone with --live, as JSON with --json', async () => {
    const all = JSON.parse((await nbdmux(['connections', '--json'], env)).stdout) as Array<{ id: number }>;
    expect(all.map((c) => c.id)).toEqual((await client.connections.list.query()).map((c) => c.id));
    expect(all.length).toBeGreaterThanOrEqual(2);

    const table = await nbdmux(['connections'], env);
    const [header, ...rows] = table.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^ID +EXPORT +CLIENT +PID +OPENED +FOR +SENT +STATE$/);
    expect(rows).toHaveLength(all.length);
    expect(rows[0]).toMatch(new RegExp(`^ *${all[0]!.id} +disk +127\\.0\\.0\\.1:\\d+ .* killed SIGKILL$`));

    expect(await nbdmux(['connections', '--live'], env)).toEqual({ code: 0, stdout: 'no live connections\n', stderr: '' });
    expect(JSON.parse((await nbdmux(['connections', '--limit', '1', '--json'], env)).stdout)).toHaveLength(1);
    expectOneLineFailure(await nbdmux(['connections', '--limit', '5000'], env), 1, /^nbdmux connections: limit: must be at most 1000\n$/);
  });

  it('reports health: exit 0 when new clients can be served, 1 with the reasons when not', async () => {
    const healthy = await nbdmux(['health'], env);
    expect(healthy).toMatchObject({ code: 0, stderr: '' });
    expect(healthy.stdout).toMatch(new RegExp(`^ok: NBD on 127\\.0\\.0\\.1:${daemon.nbdPort}, nbd-server 3\\.\\d+`));
    expect(JSON.parse((await nbdmux(['health', '--json'], env)).stdout)).toMatchObject({ ok: true, nbdPort: daemon.nbdPort });

    // A wrapper the test can break: the only way to make a real daemon unhealthy on purpose.
    const bin = path.join(tempDir('nbdmux-bin-'), 'nbd-server');
    fs.writeFileSync(bin, '#!/bin/sh\nexec nbd-server "$@"\n', { mode: 0o755 });
    const sick = await startDaemon({ args: ['--nbd-server-bin', bin] });
    dataDirs.push(sick.dataDir);
    fs.chmodSync(bin, 0o644);
    const unhealthy = await waitFor('health to turn bad', async () => {
      const result = await nbdmux(['health'], { NBDMUX_URL: sick.url });
      return result.code === 1 ? result : undefined;
    });
    expect(unhealthy.stdout).toMatch(/^NOT OK: .*\n {2}- .*not executable/);
    expect(JSON.parse((await nbdmux(['health', '--json'], { NBDMUX_URL: sick.url })).stdout)).toMatchObject({ ok: false });
  });

  it('exits 2 on usage errors and 1 on failures, with one line that says what to do', async () => {
    const port = await freePort();
    const unreachable = { NBDMUX_URL: `http://127.0.0.1:${port}` };
    const cases: Array<[args: string[], env: Record<string, string>, exitCode: 1 | 2, message: RegExp]> = [
      [[], env, 2, /^nbdmux: no command given; run "nbdmux --help"\n$/],
      [['frob'], env, 2, /^nbdmux: unknown command "frob"; run "nbdmux --help"\n$/],
      [['add', 'x'], env, 2, /^nbdmux: add takes NAME FILE, got "x"; run "nbdmux --help"\n$/],
      [['ls', '--force'], env, 2, /^nbdmux: ls takes no --force; run "nbdmux --help"\n$/],
      [['ls', '--bogus'], env, 2, /^nbdmux: Unknown option '--bogus'; run "nbdmux --help"\n$/],
      [['connections', '--limit', 'many'], env, 2, /--limit must be a whole number, got "many"/],
      [['--url', 'ftp://lab', 'ls'], env, 2, /^nbdmux: --url "ftp:\/\/lab" must start with http:\/\/ or https:\/\//],
      [['ls'], { NBDMUX_URL: 'lab:4040' }, 2, /^nbdmux: NBDMUX_URL "lab:4040" must start with http:\/\//],
      [
        ['ls'],
        unreachable,
        1,
        new RegExp(
          `^nbdmux ls: cannot reach the nbdmux daemon at http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\): start it, or point --url or NBDMUX_URL at it\\n$`,
        ),
      ],
      [['add', 'bad name', '/srv/x.img'], env, 1, /^nbdmux add: name: must be 1 to 64 characters/],
      [['add', 'ghost', path.join(images, 'absent.img')], env, 1, /^nbdmux add: file: .*absent\.img: no such file/],
      [
        ['add', 'both', path.join(images, 'disk.img'), '--rw', '--cow'],
        env,
        1,
        /^nbdmux add: cow: a copy-on-write export never writes its image/,
      ],
      [
        ['add', 'ranged', path.join(images, 'disk.img'), '--allow', '10.0.0.0/33'],
        env,
        1,
        /^nbdmux add: allow\.0: must be an IP address or CIDR range/,
      ],
      [['rm', 'disk', '--allow', '10.0.0.0/8'], env, 2, /^nbdmux: rm takes no --allow; run "nbdmux --help"\n$/],
    ];
    const results = await Promise.all(cases.map(([args, caseEnv]) => nbdmux(args, caseEnv)));
    for (const [i, [, , exitCode, message]] of cases.entries()) expectOneLineFailure(results[i]!, exitCode, message);

    const [urlWins, help, versionShown] = await Promise.all([
      nbdmux(['--url', daemon.url, 'ls'], unreachable),
      nbdmux(['--help'], env),
      nbdmux(['--version'], env),
    ]);
    expect(urlWins.code).toBe(0);
    expect(help.code).toBe(0);
    for (const command of [
      'ls',
      'add NAME FILE [--rw] [--cow] [--allow CIDR]...',
      'rm NAME [--force]',
      'show NAME',
      'connections',
      'watch',
      'health',
    ]) {
      expect(help.stdout).toContain(`\n  ${command}`);
    }
    expect(versionShown).toEqual({ code: 0, stdout: `nbdmux ${version}\n`, stderr: '' });
  });

  it('authenticates with NBDMUX_ADMIN_PASSWORD over HTTP and on the WebSocket, and says what to do without it', async () => {
    const guarded = await startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: 'correct horse' } });
    dataDirs.push(guarded.dataDir);
    const url = { NBDMUX_URL: guarded.url };
    expectOneLineFailure(
      await nbdmux(['ls'], url),
      1,
      new RegExp(`^nbdmux ls: the daemon at ${guarded.url} requires the admin password: set NBDMUX_ADMIN_PASSWORD\\n$`),
    );
    expectOneLineFailure(
      await nbdmux(['ls'], { ...url, NBDMUX_ADMIN_PASSWORD: 'wrong' }),
      1,
      new RegExp(`^nbdmux ls: the daemon at ${guarded.url} refused the admin password in NBDMUX_ADMIN_PASSWORD: check it\\n$`),
    );

    const authed = { ...url, NBDMUX_ADMIN_PASSWORD: 'correct horse' };
    expect(await nbdmux(['ls'], authed)).toEqual({ code: 0, stdout: 'no exports; add one with: nbdmux add NAME FILE\n', stderr: '' });
    // watch's live streams ride the WebSocket: the upgrade itself must carry the password.
    const watching = startCli(['watch', '--json'], authed);
    await waitFor('a status snapshot over the WebSocket', () => (watching.stdout().includes('"type":"status"') ? true : undefined));
    expect((await nbdmux(['add', 'guarded', makeImage(images, 'guarded.img', 65536)], authed)).code).toBe(0);
    await waitFor('the export.created event', () => (watching.stdout().includes('"exportName":"guarded"') ? true : undefined));
    watching.child.kill('SIGINT');
    expect(await watching.exited).toBe(0);
  });
});

describe('nbdmux watch', () => {
  let daemon: RunningDaemon;
  let images: string;
  let env: Record<string, string>;
  const dataDirs: string[] = [];
  beforeAll(async () => {
    daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    images = tempDir('nbdmux-images-');
    env = { NBDMUX_URL: daemon.url };
  });
  afterAll(() => killEverything(dataDirs));

  type Line =
    | { type: 'event'; event: { id: number; type: string; exportName: string | null } }
    | { type: 'status'; status: { connections: Array<{ exportName: string | null }> } }
    | { type: 'connection'; up: boolean };
  const parse = (text: string) =>
    text
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Line);

  it('streams events and live connections as JSON lines, resumes across a daemon restart without gaps or repeats, and ends on SIGINT', async () => {
    const watching = startCli(['watch', '--json'], env);
    const lines = () => parse(watching.stdout());
    const events = () => lines().flatMap((line) => (line.type === 'event' ? [line.event] : []));
    await waitFor('the first status snapshot', () => lines().find((line) => line.type === 'status'));

    const image = makeImage(images, 'live.img', 2 * 1024 * 1024);
    expect((await nbdmux(['add', 'live', image], env)).code).toBe(0);
    const reader = startSlowReader(daemon.nbdUri('live'), path.join(images, 'stop-watch-reader'));
    await reader.connected;
    await waitFor('a snapshot with the live connection', () =>
      lines().find((line) => line.type === 'status' && line.status.connections.some((c) => c.exportName === 'live')),
    );
    await reader.finish();
    await waitFor('connection.closed', () => events().find((e) => e.type === 'connection.closed' && e.exportName === 'live'));

    // The daemon goes away and comes back on the same port: watch reconnects by itself and
    // replays what happened meanwhile, each event once.
    const port = daemon.httpPort;
    await daemon.stop();
    await waitFor('watch to notice', () => lines().find((line) => line.type === 'connection' && !line.up));
    daemon = await startDaemon({ dataDir: daemon.dataDir, args: ['--port', String(port)] });
    expect((await nbdmux(['add', 'after-restart', image], env)).code).toBe(0);
    await waitFor(
      'the event from the new daemon',
      () => events().find((e) => e.type === 'export.created' && e.exportName === 'after-restart'),
      15_000,
    );

    const types = events().map((e) => e.type);
    expect(types).toEqual(
      expect.arrayContaining([
        'export.created',
        'connection.opened',
        'connection.negotiated',
        'connection.closed',
        'daemon.stopped',
        'daemon.started',
      ]),
    );
    const ids = events().map((e) => e.id);
    expect(ids).toEqual([...new Set(ids)].sort((a, b) => a - b));
    expect(lines().find((line) => line.type === 'connection' && line.up)).toBeDefined();

    watching.child.kill('SIGINT');
    expect(await watching.exited).toBe(0);
  });

  it('prints one aligned line per event, in units, and per status change when not on a terminal; a connection as attached and closed', async () => {
    const watching = startCli(['watch'], env);
    await waitFor('the status line', () =>
      /^\d\d:\d\d:\d\d {2}status {19}- {15}health ok, \d+ export\(s\), 0 live connection\(s\)$/m.test(watching.stdout()) ? true : undefined,
    );
    // Time, event and export in columns: the text of every event starts at one column.
    const column = (type: string, exportName: string) => `  ${type.padEnd(23)}  ${exportName.padEnd(14)}  `;
    expect(watching.stdout()).toMatch(
      new RegExp(
        `^\\d\\d:\\d\\d:\\d\\d${column('export.created', 'live')}/\\S+/live\\.img, 2\\.0 MiB, read-only \\(by open from 127\\.0\\.0\\.1\\)$`,
        'm',
      ),
    );
    // The first test's reader, among the events replayed: attached, then closed with its time and bytes, and no `opened` line.
    expect(watching.stdout()).toMatch(new RegExp(`${column('connection.negotiated', 'live')}#\\d+ 127\\.0\\.0\\.1 attached$`, 'm'));
    expect(watching.stdout()).toMatch(
      new RegExp(`${column('connection.closed', 'live')}#\\d+ 127\\.0\\.0\\.1 \\S+ after \\d+s, sent \\d+(\\.\\d)? [KM]?i?B`, 'm'),
    );
    expect(watching.stdout()).not.toMatch(/connection\.opened/);
    expect((await nbdmux(['rm', 'live'], env)).code).toBe(0);
    await waitFor('the export.removed line', () =>
      new RegExp(`${column('export.removed', 'live')}removed, no live connection \\(by open from 127\\.0\\.0\\.1\\)$`, 'm').test(
        watching.stdout(),
      )
        ? true
        : undefined,
    );
    watching.child.kill('SIGINT');
    expect(await watching.exited).toBe(0);
    expect(watching.stderr()).toBe('');
    // Status lines too: every line's text starts at one column.
    for (const line of watching.stdout().trimEnd().split('\n'))
      expect(line.slice(8 + 2 + 23 + 2 + 14, 8 + 2 + 23 + 2 + 14 + 3), line).toMatch(/^ {2}\S$/);
  });

  it('redraws a terminal screen in place, wraps a long line whole instead of cutting it, and restores the terminal on Ctrl-C', async () => {
    // A line longer than the terminal's 80 columns: its end is what must not be lost.
    const deep = path.join(images, 'a-directory-whose-name-alone-takes-most-of-a-terminal-line');
    fs.mkdirSync(deep, { recursive: true });
    expect((await nbdmux(['add', 'long', makeImage(deep, 'the-end-of-the-line.img', 1024 * 1024)], env)).code).toBe(0);
    // script(1) gives watch a real pseudo-terminal; Ctrl-C typed into it reaches watch as SIGINT.
    // script runs the command through $SHELL -c; `exec` leaves watch alone in the terminal's
    // foreground group, as an interactive shell would, instead of beside a shell (dash) that the
    // same SIGINT kills.
    const watching = startCli([], env, 'script', ['-qfec', `stty cols 80 rows 40; exec ${process.execPath} ${cli} watch`, '/dev/null']);
    await waitFor('the screen', () => (watching.stdout().includes('LIVE CONNECTIONS') ? true : undefined));
    const screen = watching.stdout();
    expect(screen.startsWith('\x1b[?1049h\x1b[?25l\x1b[H')).toBe(true);
    expect(screen).toMatch(/nbdmux watch {2}http:\/\/127\.0\.0\.1:\d+ {2}live/);
    expect(screen).toMatch(/health ok, \d+ export\(s\), 0 live connection\(s\)/);
    expect(screen).toMatch(/EVENTS\x1b\[K\r\n(.*\r\n)*.*export\.created +after-restart/);
    // The last frame drawn, as the terminal shows it.
    const lines = screen
      .split('\x1b[H')
      .at(-1)!
      .replace(/\x1b\[[?0-9;]*[A-Za-z]/g, '')
      .split('\r\n');
    for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(80);
    expect(screen).not.toContain('…');
    const at = lines.findIndex((line) => /export\.created +long /.test(line));
    expect(at, screen).toBeGreaterThan(0);
    // Its further lines go on indented under it, and together say it all.
    const continued = lines.slice(at + 1, at + 3).filter((line) => /^ {26}\S/.test(line));
    expect(continued.length).toBeGreaterThan(0);
    expect(lines[at] + continued.map((line) => line.slice(26)).join('')).toContain(`${deep}/the-end-of-the-line.img, 1.0 MiB, read-only`);
    watching.child.stdin!.write('\x03');
    expect(await watching.exited).toBe(0);
    expect(watching.stdout().endsWith('\x1b[?25h\x1b[?1049l')).toBe(true);
  });
});
