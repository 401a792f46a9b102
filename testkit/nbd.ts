import { type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { debianPythonEnv, run, startProcess, type RunResult } from './process.js';

/**
 * A file of random bytes: any byte served from the wrong place or offset shows. Written in 16 MiB
 * pieces, so a 1 GiB benchmark image never sits in memory whole.
 */
export function makeImage(dir: string, name: string, bytes: number): string {
  const file = path.join(dir, name);
  const fd = fs.openSync(file, 'w');
  try {
    for (let written = 0; written < bytes;) {
      const piece = crypto.randomBytes(Math.min(16 << 20, bytes - written));
      fs.writeSync(fd, piece);
      written += piece.length;
    }
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

export function sha256(data: Buffer | string): string {
  return crypto
    .createHash('sha256')
    .update(typeof data === 'string' ? fs.readFileSync(data) : data)
    .digest('hex');
}

/** Reads a whole export through the NBD port with nbdcopy. */
export async function readExport(uri: string): Promise<Buffer> {
  const result = await run('nbdcopy', [uri, '-']);
  if (result.code !== 0) throw new Error(`nbdcopy ${uri} failed (${result.code}): ${result.stderr}`);
  return result.stdout;
}

export async function listExports(uri: string): Promise<string[]> {
  const result = await run('nbdinfo', ['--list', '--json', uri]);
  if (result.code !== 0) throw new Error(`nbdinfo --list failed: ${result.stderr}`);
  return (JSON.parse(result.stdout.toString()) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']);
}

export function nbdsh(args: string[]): Promise<RunResult> {
  return run('nbdsh', args, { env: debianPythonEnv });
}

/** An nbdsh script that holds its connection open until its stop file appears. */
export interface NbdshSession {
  child: ChildProcess;
  /** Resolves once the script has printed its ready word; rejects if it exits first. */
  ready: Promise<void>;
  /** Creates the stop file and waits for the script to exit. */
  finish(): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/**
 * Runs `script` in nbdsh connected to `uri`. The script prints `readyWord` once it is where the
 * test wants it, then polls for `stopFile` itself, so the connection lives exactly as long as
 * the test says.
 */
export function startNbdshSession(uri: string, script: string, readyWord: string, stopFile: string): NbdshSession {
  const nbdshProcess = startProcess('nbdsh', ['-u', uri, '-c', script], { env: debianPythonEnv });
  const { child, exited } = nbdshProcess;
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', () => {
      if (nbdshProcess.stdout().includes(readyWord)) resolve();
    });
    void exited.then((code) => reject(new Error(`nbdsh exited (${code}) before "${readyWord}": ${nbdshProcess.stderr()}`)));
  });
  ready.catch(() => {});
  return {
    child,
    ready,
    finish: async () => {
      fs.writeFileSync(stopFile, '');
      const code = await exited;
      return { code, stdout: nbdshProcess.stdout(), stderr: nbdshProcess.stderr() };
    },
  };
}

export interface SlowReader {
  child: ChildProcess;
  /** Resolves once the reader has its connection and has read its first block. */
  connected: Promise<void>;
  /** Lets the reader read the rest and exit; resolves with its exit code and the sha256 of every byte it read. */
  finish(): Promise<{ code: number | null; sha256: string; stderr: string }>;
}

/**
 * A client that stays connected and keeps reading one block every 50 ms until told to finish,
 * then reads the whole export and prints the sha256 of everything: a stand-in for a booted
 * machine whose connection must survive whatever happens around it.
 */
export function startSlowReader(uri: string, stopFile: string): SlowReader {
  const script = `
import hashlib, os, sys, time
size = h.get_size()
print("connected", flush=True)
i = 0
while not os.path.exists(${JSON.stringify(stopFile)}):
    h.pread(4096, (i * 4096) % size); i += 1; time.sleep(0.05)
digest = hashlib.sha256()
off = 0
while off < size:
    n = min(1 << 20, size - off); digest.update(h.pread(n, off)); off += n
print("sha256", digest.hexdigest(), flush=True)
`;
  const session = startNbdshSession(uri, script, 'connected', stopFile);
  return {
    child: session.child,
    connected: session.ready,
    finish: async () => {
      const { code, stdout, stderr } = await session.finish();
      return { code, sha256: /sha256 ([0-9a-f]{64})/.exec(stdout)?.[1] ?? '', stderr };
    },
  };
}
