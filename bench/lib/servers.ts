import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built daemon, exactly as an operator runs it (bench compiles to dist/bench/lib). */
const cli = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

/** What a benchmark compares: the thing measured and the pid whose CPU and memory are its cost. */
export interface Server {
  label: string;
  nbdPort: number;
  /** The process that owns every nbd-server it runs: its CPU counters include reaped children. */
  pid: number;
  stop(): Promise<void>;
}

export interface Nbdmux extends Server {
  url: string;
  dataDir: string;
  fastStart: boolean;
}

/**
 * Starts nbdmux on free loopback ports. `fastStart: false` points it at a wrapper that drops
 * LD_PRELOAD before exec'ing the real nbd-server, so the daemon's own detection sees the shim
 * not bind and falls back: the plain path exactly as it runs when the shim is missing (plus
 * one exec of /bin/sh, about a millisecond, per connection).
 */
export async function startNbdmux(workDir: string, label: string, fastStart: boolean): Promise<Nbdmux> {
  const dataDir = fs.mkdtempSync(path.join(workDir, 'nbdmux-'));
  // Every bench client connects from 127.0.0.1: lift the cap on one address's unnegotiated connections.
  const args = [cli, '--data-dir', dataDir, '--bind', '127.0.0.1', '--port', '0', '--nbd-port', '0', '--max-connections', '1024', '--nbd-max-pending-per-client', '1023'];
  if (!fastStart) {
    const wrapper = path.join(dataDir, 'nbd-server-without-shim');
    fs.writeFileSync(wrapper, '#!/bin/sh\nunset LD_PRELOAD\nexec nbd-server "$@"\n', { mode: 0o755 });
    args.push('--nbd-server-bin', wrapper);
  }
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ports = await waitForListening(child);
  const url = `http://127.0.0.1:${ports.httpPort}`;
  const health = (await (await fetch(`${url}/trpc/system.health`)).json()) as { result: { data: { fastStart: boolean; fastStartReason: string | null } } };
  const reported = health.result.data;
  if (reported.fastStart !== fastStart) {
    child.kill('SIGKILL');
    throw new Error(`${label}: expected fastStart ${fastStart}, the daemon reports ${reported.fastStart} (${reported.fastStartReason ?? 'no reason'})`);
  }
  return {
    label,
    url,
    dataDir,
    fastStart,
    nbdPort: ports.nbdPort,
    pid: child.pid!,
    stop: async () => {
      await stopChild(child);
      killServingProcesses(dataDir);
    },
  };
}

/**
 * The baseline: nbd-server as it is meant to run on its own, a daemon that forks one child per
 * client (DH parameters are generated once, in the parent), serving the same file read-only.
 */
export async function startBareNbdServer(workDir: string, exports: Record<string, string>): Promise<Server> {
  const dir = fs.mkdtempSync(path.join(workDir, 'bare-'));
  const port = await freePort();
  const config = path.join(dir, 'config');
  const pidFile = path.join(dir, 'pid');
  const sections = Object.entries(exports).map(([name, file]) => `[${name}]\nexportname = ${file}\nreadonly = true\n`);
  fs.writeFileSync(config, `[generic]\nport = ${port}\nlistenaddr = 127.0.0.1\n\n${sections.join('\n')}`);
  const launcher = spawn('nbd-server', ['-C', config, '-p', pidFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  launcher.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => launcher.on('close', resolve));
  if (code !== 0) throw new Error(`bare nbd-server did not start (exit ${code}): ${stderr}`);
  // Daemon mode reports a busy port only to syslog: wait until it really accepts.
  const pid = await poll('the bare nbd-server pid file', () => (fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) || undefined : undefined));
  await poll('the bare nbd-server to accept', () => canConnect(port));
  return {
    label: 'bare nbd-server',
    nbdPort: port,
    pid,
    stop: async () => {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        return;
      }
      await poll('the bare nbd-server to exit', () => (fs.existsSync(`/proc/${pid}`) ? undefined : true));
    },
  };
}

/** Starts each server in turn; if one fails, stops those already running before rethrowing. */
export async function startAll<T extends Record<string, Server>>(starters: { [K in keyof T]: () => Promise<T[K]> }): Promise<T> {
  const started: Partial<T> = {};
  try {
    for (const key of Object.keys(starters) as Array<keyof T>) started[key] = await starters[key]();
    return started as T;
  } catch (err) {
    await stopAll(started);
    throw err;
  }
}

export async function stopAll(servers: Partial<Record<string, Server>>): Promise<void> {
  await Promise.all(Object.values(servers).map((server) => server?.stop()));
}

export async function api(url: string, method: string, route: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const response = await fetch(url + route, {
    method,
    ...(body !== undefined && { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, json: text === '' ? undefined : JSON.parse(text) };
}

/** Polls every 10 ms until `check` gives a value, for at most `ms`. */
export async function poll<T>(what: string, check: () => T | undefined | Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function waitForListening(child: ChildProcess): Promise<{ httpPort: number; nbdPort: number }> {
  let output = '';
  child.stderr!.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nbdmux did not start in 15 s:\n${output}`)), 15_000);
    child.stderr!.on('data', (chunk: string) => {
      output += chunk;
      const line = output.split('\n').find((l) => l.includes('"nbdmux listening"'));
      if (!line) return;
      clearTimeout(timer);
      resolve(JSON.parse(line) as { httpPort: number; nbdPort: number });
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nbdmux exited with ${code} before listening:\n${output}`));
    });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** nbdmux leaves serving processes running on purpose (they outlive restarts): end its leftovers. */
function killServingProcesses(dataDir: string): void {
  for (const pid of fs.readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`${dataDir}/nbd-server.conf`)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<true | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(undefined));
  });
}
