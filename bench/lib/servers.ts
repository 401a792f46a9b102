import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startDaemon, waitFor, writeShimlessNbdServer } from '../../testkit/daemon.js';
import { freePort } from '../../testkit/ports.js';
import { killServingProcesses } from '../../testkit/proc.js';

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
 * Starts nbdmux on free loopback ports. `fastStart: false` points it at an nbd-server wrapper
 * that drops the shim, so the daemon's own detection sees the shim not bind and falls back: the
 * plain path exactly as it runs when the shim is missing.
 */
export async function startNbdmux(workDir: string, label: string, fastStart: boolean, warmPool?: number): Promise<Nbdmux> {
  const dataDir = fs.mkdtempSync(path.join(workDir, 'nbdmux-'));
  // Every bench client connects from 127.0.0.1: lift the caps on one address's unnegotiated
  // connections and WebSockets (the soak opens a client per subscriber, each socket closing a
  // second after it unsubscribes).
  const args = ['--max-connections', '1024', '--nbd-max-pending-per-client', '1023', '--max-websockets-per-client', '256'];
  if (!fastStart) args.push('--nbd-server-bin', writeShimlessNbdServer(dataDir));
  // A benchmark that compares the warm pool side by side passes its size; BENCH_NBD_WARM_POOL runs any other with one.
  const pool = warmPool ?? process.env.BENCH_NBD_WARM_POOL;
  if (pool !== undefined) args.push('--nbd-warm-pool', String(pool));
  const daemon = await startDaemon({ dataDir, args });
  const health = (await (await fetch(`${daemon.url}/trpc/system.health`)).json()) as {
    result: { data: { fastStart: boolean; fastStartReason: string | null } };
  };
  const reported = health.result.data;
  if (reported.fastStart !== fastStart) {
    daemon.child.kill('SIGKILL');
    throw new Error(
      `${label}: expected fastStart ${fastStart}, the daemon reports ${reported.fastStart} (${reported.fastStartReason ?? 'no reason'})`,
    );
  }
  return {
    label,
    url: daemon.url,
    dataDir,
    fastStart,
    nbdPort: daemon.nbdPort,
    pid: daemon.child.pid!,
    stop: async () => {
      await daemon.stop();
      killServingProcesses([dataDir]);
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
  launcher.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => launcher.on('close', resolve));
  if (code !== 0) throw new Error(`bare nbd-server did not start (exit ${code}): ${stderr}`);
  // Daemon mode reports a busy port only to syslog: wait until it really accepts.
  const pid = await waitFor(
    'the bare nbd-server pid file',
    () => (fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) || undefined : undefined),
    30_000,
    10,
  );
  await waitFor('the bare nbd-server to accept', () => canConnect(port), 30_000, 10);
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
      await waitFor('the bare nbd-server to exit', () => (fs.existsSync(`/proc/${pid}`) ? undefined : true), 30_000, 10);
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
  await Promise.all(
    Object.values(servers)
      .filter((server) => server !== undefined)
      .map((server) => server.stop()),
  );
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

/** nbdkit's file plugin serving `file` read-only (to any export name): one threaded process. */
export async function startNbdkit(file: string): Promise<Server> {
  const port = await freePort();
  const child = spawn(
    'nbdkit',
    ['--foreground', '--exit-with-parent', '--readonly', '--ipaddr', '127.0.0.1', '--port', String(port), 'file', file],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  try {
    await waitFor(
      'nbdkit to accept',
      () => {
        if (child.exitCode !== null) throw new Error(`nbdkit exited ${child.exitCode}: ${stderr}`);
        return canConnect(port);
      },
      30_000,
      10,
    );
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    label: 'nbdkit',
    nbdPort: port,
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
