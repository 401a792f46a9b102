import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** nbdsh runs `python3 -m nbd`: Debian's python3, not whichever python3 comes first on PATH. */
const clientEnv = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

export interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

export function run(command: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: clientEnv, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(stdout), stderr }));
  });
}

/** A file of random bytes: any byte served from the wrong place or offset shows. */
export function makeImage(dir: string, name: string, bytes: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, crypto.randomBytes(bytes));
  return file;
}

export function sha256(data: Buffer | string): string {
  return crypto.createHash('sha256').update(typeof data === 'string' ? fs.readFileSync(data) : data).digest('hex');
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
  return run('nbdsh', args);
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
  const child = spawn('nbdsh', ['-u', uri, '-c', script], { env: clientEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.includes(readyWord)) resolve();
    });
    void exited.then((code) => reject(new Error(`nbdsh exited (${code}) before "${readyWord}": ${stderr}`)));
  });
  ready.catch(() => {});
  return {
    child,
    ready,
    finish: async () => {
      fs.writeFileSync(stopFile, '');
      const code = await exited;
      return { code, stdout, stderr };
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
