import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, untilListening } from '../testkit/daemon.js';
import { makeImage, readExport } from '../testkit/nbd.js';
import { occupyPort } from '../testkit/ports.js';
import { run, runText, type TextResult } from '../testkit/process.js';

const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const { version } = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

/** The test runner's own NBDMUX_* variables must not leak into a CLI under test. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('NBDMUX_')));
  return { ...env, ...extra };
}

type CliResult = TextResult;

/** Runs the CLI to completion; one that does not exit in time is killed and shows as signal SIGKILL. */
function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 15_000): Promise<CliResult> {
  return runText(process.execPath, [cli, ...args], { env: cleanEnv(env), timeoutMs });
}

function nonEmptyLines(text: string): string[] {
  return text.split('\n').filter((line) => line.trim() !== '');
}

/** A start-up failure is one line on stderr, prefixed with the program name, and nothing on stdout. */
function expectOneLineFailure(result: CliResult, exitCode: number, mention: string | RegExp): void {
  expect({ code: result.code, signal: result.signal, stdout: result.stdout }).toEqual({ code: exitCode, signal: null, stdout: '' });
  const lines = nonEmptyLines(result.stderr);
  expect(lines, `stderr was ${JSON.stringify(result.stderr)}`).toHaveLength(1);
  expect(lines[0]).toMatch(/^nbdmux-server: /);
  if (typeof mention === 'string') expect(lines[0]).toContain(mention);
  else expect(lines[0]).toMatch(mention);
}

describe('nbdmux-server command line: what it prints and how it exits before serving', () => {
  const dataDirs: string[] = [];
  const held: Array<{ release(): Promise<void> }> = [];
  afterEach(async () => {
    killEverything(dataDirs);
    await Promise.all(held.splice(0).map((port) => port.release()));
  });

  /** A data dir for a CLI run, ended by killEverything if the run leaves anything behind. */
  function dataDir(): string {
    const dir = tempDir('nbdmux-cli-');
    dataDirs.push(dir);
    return dir;
  }

  /**
   * Runs the CLI with settings under which a daemon that starts logs no warning: the warnings
   * about an unconfined image root and an open control plane are not part of a start-up
   * failure, and would hide whether the failure itself is one line.
   */
  function runWithoutWarnings(args: string[]): Promise<CliResult> {
    return runCli([...args, '--image-root', tempDir('nbdmux-cli-images-')], { NBDMUX_ADMIN_PASSWORD: 'cli-test-password' });
  }

  it('prints usage listing every option on --help and exits 0', async () => {
    const result = await runCli(['--help']);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/^Usage: nbdmux-server --data-dir DIR/);
    for (const flag of [
      '--data-dir',
      '--port',
      '--bind',
      '--nbd-port',
      '--nbd-bind',
      '--nbd-server-bin',
      '--image-root',
      '--max-connections',
      '--log-level',
      '--help',
      '--version',
    ]) {
      expect(result.stdout).toContain(`  ${flag} `);
    }
  });

  it('prints its name and the package version on --version and exits 0', async () => {
    const result = await runCli(['--version']);
    expect(result).toEqual({ code: 0, signal: null, stdout: `nbdmux-server ${version}\n`, stderr: '' });
    expect(version).toBe('0.1.0');
  });

  it('exits 2 with one line naming --data-dir when no data dir is given', async () => {
    expectOneLineFailure(await runCli(['--port', '0']), 2, '--data-dir');
  });

  it('exits 2 with one line naming an unknown flag', async () => {
    const result = await runCli(['--data-dir', dataDir(), '--no-such-flag']);
    expectOneLineFailure(result, 2, '--no-such-flag');
    expect(result.stderr).toContain('--help');
  });

  it('exits 2 with one line on a positional argument', async () => {
    expectOneLineFailure(await runCli(['--data-dir', dataDir(), 'stray']), 2, 'stray');
  });

  it.each(['--port 70000', '--port=-1', '--port http', '--port 80.5', '--nbd-port 65536'])(
    'exits 2 with one line naming the flag on %s',
    async (option) => {
      const flag = option.split(/[ =]/)[0]!;
      expectOneLineFailure(
        await runCli(['--data-dir', dataDir(), ...option.split(' ')]),
        2,
        `${flag} must be a port number from 0 to 65535`,
      );
    },
  );

  it('exits 2 with one line naming the flag when its value starts with a dash (--port -1)', async () => {
    expectOneLineFailure(await runCli(['--data-dir', dataDir(), '--port', '-1']), 2, '--port');
  });

  it('exits 2 with one line naming the flag when its value is missing', async () => {
    expectOneLineFailure(await runCli(['--data-dir']), 2, '--data-dir');
  });

  it('exits 2 naming the flag when the invalid value comes from its environment variable', async () => {
    expectOneLineFailure(await runCli([], { NBDMUX_DATA_DIR: dataDir(), NBDMUX_PORT: '70000' }), 2, '--port must be a port number');
  });

  it('exits 2 with one line on an unknown --log-level', async () => {
    expectOneLineFailure(
      await runCli(['--data-dir', dataDir(), '--log-level', 'verbose']),
      2,
      '--log-level must be one of debug, info, warn, error',
    );
  });

  it('exits 1 with one line naming the data dir when it cannot be created', async () => {
    const parent = dataDir();
    const file = path.join(parent, 'a-file');
    fs.writeFileSync(file, '');
    const wanted = path.join(file, 'sub');
    const result = await runWithoutWarnings(['--data-dir', wanted, '--bind', '127.0.0.1', '--port', '0', '--nbd-port', '0']);
    expectOneLineFailure(result, 1, `data dir ${wanted} cannot be created`);
  });

  it('exits 1 with one line when the HTTP port is already in use', async () => {
    const taken = await occupyPort();
    held.push(taken);
    const result = await runWithoutWarnings([
      '--data-dir',
      dataDir(),
      '--bind',
      '127.0.0.1',
      '--port',
      String(taken.port),
      '--nbd-port',
      '0',
    ]);
    expectOneLineFailure(result, 1, `HTTP port already in use: 127.0.0.1 port ${taken.port}`);
  });

  it('exits 1 with one line when the NBD port is already in use', async () => {
    const taken = await occupyPort();
    held.push(taken);
    const result = await runWithoutWarnings([
      '--data-dir',
      dataDir(),
      '--bind',
      '127.0.0.1',
      '--port',
      '0',
      '--nbd-port',
      String(taken.port),
    ]);
    expectOneLineFailure(result, 1, `NBD port already in use: 127.0.0.1 port ${taken.port}`);
  });

  it('exits 1 with one line when the nbd-server binary is not found', async () => {
    const result = await runWithoutWarnings([
      '--data-dir',
      dataDir(),
      '--bind',
      '127.0.0.1',
      '--port',
      '0',
      '--nbd-port',
      '0',
      '--nbd-server-bin',
      '/nonexistent/nbd-server',
    ]);
    expectOneLineFailure(result, 1, /"\/nonexistent\/nbd-server" not found/);
  });

  it('exits 1 with one line when the nbd-server binary is some other program', async () => {
    const result = await runWithoutWarnings([
      '--data-dir',
      dataDir(),
      '--bind',
      '127.0.0.1',
      '--port',
      '0',
      '--nbd-port',
      '0',
      '--nbd-server-bin',
      '/bin/true',
    ]);
    expectOneLineFailure(result, 1, '"/bin/true" is not nbd-server');
  });
});

describe('nbdmux-server command line: a daemon that starts', () => {
  const dataDirs: string[] = [];
  const spawned = new Set<ChildProcess>();
  afterAll(() => {
    for (const child of spawned) child.kill('SIGKILL');
    killEverything(dataDirs);
  });

  function dataDir(): string {
    const dir = tempDir('nbdmux-cli-');
    dataDirs.push(dir);
    return dir;
  }

  /** Starts the CLI with only environment variables, no flags, and resolves with its "listening" log fields. */
  async function startFromEnvironment(
    env: Record<string, string>,
  ): Promise<{ child: ChildProcess; listening: Record<string, unknown>; output(): string }> {
    const child = spawn(process.execPath, [cli], { env: cleanEnv(env), stdio: ['ignore', 'ignore', 'pipe'] });
    spawned.add(child);
    return { child, ...(await untilListening(child)) };
  }

  it('takes every setting from NBDMUX_* environment variables', async () => {
    const dir = dataDir();
    const rootA = fs.realpathSync(tempDir('nbdmux-root-a-'));
    const rootB = fs.realpathSync(tempDir('nbdmux-root-b-'));
    const elsewhere = fs.realpathSync(tempDir('nbdmux-elsewhere-'));
    const started = await startFromEnvironment({
      NBDMUX_DATA_DIR: dir,
      NBDMUX_PORT: '0',
      NBDMUX_BIND: '127.0.0.1',
      NBDMUX_NBD_PORT: '0',
      NBDMUX_NBD_SERVER_BIN: 'nbd-server',
      NBDMUX_IMAGE_ROOTS: `${rootA}:${rootB}`,
      NBDMUX_LOG_LEVEL: 'debug',
    });
    expect(started.listening).toMatchObject({
      dataDir: dir,
      http: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
      nbd: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
    });
    expect(fs.existsSync(path.join(dir, 'nbd-server.conf'))).toBe(true);
    expect(started.output()).not.toContain('--image-root');

    const daemon = { url: `http://127.0.0.1:${started.listening.httpPort as number}` };
    const refused = await api(daemon, 'POST', '/exports', { name: 'elsewhere', file: makeImage(elsewhere, 'disk.img', 4096) });
    expect(refused.status).toBe(400);
    // The image store (DATA_DIR/images) is always a root too.
    expect(refused.json.error.message).toContain(`outside the image roots (${rootA}, ${rootB}, ${path.join(dir, 'images')})`);
    const accepted = await api(daemon, 'POST', '/exports', { name: 'in-b', file: makeImage(rootB, 'disk.img', 4096) });
    expect(accepted.status).toBe(201);
  });

  it('lets each flag win over its environment variable', async () => {
    const dir = dataDir();
    const daemon = await startDaemon({
      dataDir: dir,
      args: ['--nbd-server-bin', 'nbd-server', '--image-root', tempDir('nbdmux-cli-images-')],
      env: {
        NBDMUX_NBD_SERVER_BIN: '/nonexistent/nbd-server',
        NBDMUX_PORT: '70000',
        NBDMUX_NBD_PORT: '70000',
        NBDMUX_BIND: '203.0.113.1',
        NBDMUX_DATA_DIR: path.join(dir, 'not-this-one'),
        NBDMUX_IMAGE_ROOTS: '/nonexistent-root',
      },
    });
    expect((await api(daemon, 'GET', '/healthz')).status).toBe(200);
    expect(fs.existsSync(path.join(dir, 'state.db'))).toBe(true);
    expect(fs.existsSync(path.join(dir, 'not-this-one'))).toBe(false);
  });

  it('warns once, naming --image-root, when no image root confines exports', async () => {
    const daemon = await startDaemon({ dataDir: dataDir() });
    const imageRootWarnings = nonEmptyLines(daemon.output())
      .map((line) => JSON.parse(line) as { level: string; msg: string })
      .filter((entry) => entry.msg.includes('--image-root'));
    expect(imageRootWarnings).toHaveLength(1);
    expect(imageRootWarnings[0]!.level).toBe('warn');
  });

  it('does not warn about image roots when --image-root is set', async () => {
    const daemon = await startDaemon({ dataDir: dataDir(), args: ['--image-root', tempDir('nbdmux-cli-images-')] });
    expect(daemon.output()).toContain('"nbdmux listening"');
    expect(daemon.output()).not.toContain('--image-root');
  });

  it.each(['SIGTERM', 'SIGINT'] as const)('exits 0 on %s once serving, and stops listening on both ports', async (signal) => {
    const daemon = await startDaemon({ dataDir: dataDir() });
    expect((await api(daemon, 'GET', '/healthz')).status).toBe(200);
    expect(await daemon.stop(signal)).toBe(0);
    expect(daemon.output()).toContain(`"msg":"stopping; live NBD connections keep being served","signal":"${signal}"`);
    await expect(fetch(`${daemon.url}/healthz`)).rejects.toThrow();
    const nbd = await run('nbdinfo', [daemon.nbdUri()], { timeoutMs: 15_000 });
    expect(nbd.code).not.toBe(0);
  });

  it('exits 0 on SIGTERM sent the moment it logs "nbdmux listening", every time', async () => {
    // The listening line is what a supervisor waits for; a stop right after it must be graceful too.
    // Ten tries, because the window between the line and the signal handlers is short.
    const exits: Array<{ code: number | null; signal: NodeJS.Signals | null }> = [];
    for (let i = 0; i < 10; i++) {
      const daemon = await startDaemon({ dataDir: dataDir() });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        daemon.child.on('exit', (code, signal) => resolve({ code, signal })),
      );
      daemon.child.kill('SIGTERM');
      exits.push(await exited);
      await daemon.stop();
    }
    expect(exits).toEqual(Array.from({ length: 10 }, () => ({ code: 0, signal: null })));
  }, 120_000);

  it('keeps its exports across a restart on the same data dir, and serves them again', async () => {
    const dir = dataDir();
    const images = tempDir('nbdmux-cli-images-');
    const image = makeImage(images, 'kept.img', 1024 * 1024 + 512);

    const first = await startDaemon({ dataDir: dir, args: ['--image-root', images] });
    expect((await api(first, 'POST', '/exports', { name: 'kept', file: image, readonly: false })).status).toBe(201);
    const before = await api(first, 'GET', '/exports');
    const configBefore = fs.readFileSync(path.join(dir, 'nbd-server.conf'));
    expect(await first.stop('SIGTERM')).toBe(0);

    const second = await startDaemon({ dataDir: dir, args: ['--image-root', images] });
    const after = await api(second, 'GET', '/exports');
    expect(after.status).toBe(200);
    expect(after.json).toEqual(before.json);
    expect(after.json.map((exp: { name: string }) => exp.name)).toEqual(['kept']);
    expect(fs.readFileSync(path.join(dir, 'nbd-server.conf')).equals(configBefore)).toBe(true);

    const info = await run('nbdinfo', ['--size', second.nbdUri('kept')]);
    expect([info.code, info.stdout.toString().trim()]).toEqual([0, String(1024 * 1024 + 512)]);
    expect((await readExport(second.nbdUri('kept'))).equals(fs.readFileSync(image))).toBe(true);
  });
});
