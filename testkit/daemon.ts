import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { killServingProcesses } from './proc.js';

/** The repository: this module runs from the sources (vitest) and from dist/test/helpers (the built bench) alike. */
function findRepository(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir);
  return dir;
}

const cli = path.join(findRepository(), 'dist/src/cli.js');

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
  /** The HTTP port (default: a free one), for a daemon started again where machines already reach it. */
  httpPort?: number;
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
  const args = [
    cli,
    '--data-dir',
    dataDir,
    '--bind',
    '127.0.0.1',
    '--port',
    String(options.httpPort ?? 0),
    '--nbd-port',
    String(options.nbdPort ?? 0),
    ...(options.args ?? []),
  ];
  const [command, ...commandArgs] = [...(options.wrapper ?? []), process.execPath, ...args];
  const child = spawn(command!, commandArgs, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...options.env } });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const { listening, output } = await untilListening(child);
  running.add(child);
  return {
    httpPort: listening.httpPort,
    nbdPort: listening.nbdPort,
    url: `http://127.0.0.1:${listening.httpPort}`,
    dataDir,
    child,
    nbdUri: (name = '') => `nbd://127.0.0.1:${listening.nbdPort}/${name}`,
    output,
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
 * A real nbd-server behind a wrapper that drops LD_PRELOAD before exec'ing it: what a fast-start
 * shim that does not bind looks like, so the daemon falls back to its plain path (plus one exec
 * of /bin/sh, about a millisecond, per connection).
 */
export function writeShimlessNbdServer(dir: string): string {
  const file = path.join(dir, 'nbd-server-without-shim');
  fs.writeFileSync(file, '#!/bin/sh\nunset LD_PRELOAD\nexec nbd-server "$@"\n', { mode: 0o755 });
  return file;
}

/**
 * Ends every daemon a test started and every nbd-server serving from its data dirs: serving
 * processes outlive the daemon on purpose, so a test must end them itself.
 */
export function killEverything(dataDirs: string[]): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
  killServingProcesses(dataDirs);
}

type ListeningLine = { httpPort: number; nbdPort: number } & Record<string, unknown>;

/**
 * Waits for a daemon's "nbdmux listening" log line and resolves with its fields (httpPort, nbdPort,
 * ...); rejects if the daemon exits first or takes over 15 s. `output` keeps collecting stderr.
 */
export async function untilListening(child: ChildProcess): Promise<{ listening: ListeningLine; output: () => string }> {
  let output = '';
  child.stderr!.setEncoding('utf8');
  const listening = await new Promise<ListeningLine>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start in 15 s:\n${output}`)), 15_000);
    child.stderr!.on('data', (chunk: string) => {
      output += chunk;
      const line = output.split('\n').find((l) => l.includes('"nbdmux listening"'));
      if (line === undefined) return;
      clearTimeout(timer);
      resolve(JSON.parse(line) as ListeningLine);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited with ${code} before listening:\n${output}`));
    });
  });
  return { listening, output: () => output };
}

export async function api(
  daemon: Pick<RunningDaemon, 'url'>,
  method: string,
  route: string,
  body?: unknown,
): Promise<{ status: number; json: any; text: string }> {
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

/**
 * Polls every `everyMs` until `check` returns a value other than undefined, or fails after `ms`.
 * `what` may be a function, asked at the timeout, so that the failure can say what was last seen.
 */
export async function waitFor<T>(
  what: string | (() => string),
  check: () => T | undefined | Promise<T | undefined>,
  ms = 10_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/**
 * Each export's boot summary by name, once nbdmux has inspected every image (none is still
 * `inspecting`): what a boot test waits for before a guest asks for its script.
 */
export async function inspectedBoots<Boot extends { reason: string | null }>(
  daemon: Pick<RunningDaemon, 'url'>,
  ms = 60_000,
): Promise<Record<string, Boot>> {
  return waitFor(
    'every image inspected',
    async () => {
      const listed = (await api(daemon, 'GET', '/exports')).json as { name: string; boot: Boot }[];
      return listed.every((exp) => exp.boot.reason !== 'inspecting')
        ? Object.fromEntries(listed.map((exp) => [exp.name, exp.boot]))
        : undefined;
    },
    ms,
  );
}

/** `promise`, or a failure naming `what` once `ms` have passed: a step that hangs says which it was. */
export function within<T>(what: string, ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}
