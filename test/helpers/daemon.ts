import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));

export interface RunningDaemon {
  url: string;
  httpPort: number;
  nbdPort: number;
  dataDir: string;
  child: ChildProcess;
  nbdUri(name?: string): string;
  /** Everything the daemon wrote to stderr so far. */
  output(): string;
  /** Sends a signal and waits for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface DaemonOptions {
  dataDir?: string;
  nbdPort?: number;
  args?: string[];
  env?: Record<string, string>;
  /** A command the daemon runs under, such as `setpriv` with its options, ending in `--`. */
  wrapper?: string[];
}

export function tempDir(prefix = 'nbdmux-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Runs the built CLI exactly as an operator would, on free loopback ports, and waits until it listens. */
export async function startDaemon(options: DaemonOptions = {}): Promise<RunningDaemon> {
  const dataDir = options.dataDir ?? tempDir();
  const args = [cli, '--data-dir', dataDir, '--bind', '127.0.0.1', '--port', '0', '--nbd-port', String(options.nbdPort ?? 0), ...(options.args ?? [])];
  const [command, ...commandArgs] = [...(options.wrapper ?? []), process.execPath, ...args];
  const child = spawn(command!, commandArgs, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...options.env } });
  let output = '';
  child.stderr!.setEncoding('utf8');
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const listening = await new Promise<{ httpPort: number; nbdPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start in 15 s:\n${output}`)), 15_000);
    child.stderr!.on('data', (chunk: string) => {
      output += chunk;
      for (const line of output.split('\n')) {
        if (!line.includes('"nbdmux listening"')) continue;
        clearTimeout(timer);
        const fields = JSON.parse(line) as { httpPort: number; nbdPort: number };
        resolve({ httpPort: fields.httpPort, nbdPort: fields.nbdPort });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited with ${code} before listening:\n${output}`));
    });
  });
  running.add(child);
  return {
    ...listening,
    url: `http://127.0.0.1:${listening.httpPort}`,
    dataDir,
    child,
    nbdUri: (name = '') => `nbd://127.0.0.1:${listening.nbdPort}/${name}`,
    output: () => output,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const code = await exited;
      running.delete(child);
      return code;
    },
  };
}

const running = new Set<ChildProcess>();

/**
 * Ends every daemon a test started and every nbd-server serving from its data dirs: serving
 * processes outlive the daemon on purpose, so a test must end them itself.
 */
export function killEverything(dataDirs: string[]): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
  for (const pid of fs.readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    let cmdline: string;
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (dataDirs.some((dir) => cmdline.includes(`${dir}/nbd-server.conf`))) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

export async function api(daemon: Pick<RunningDaemon, 'url'>, method: string, route: string, body?: unknown): Promise<{ status: number; json: any; text: string }> {
  const response = await fetch(daemon.url + route, {
    method,
    ...(body !== undefined && { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, json, text };
}

/** Polls until `check` returns a value other than undefined, or fails after `ms`. */
export async function waitFor<T>(what: string, check: () => T | undefined | Promise<T | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
