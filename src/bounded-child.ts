import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, constants, openSync } from 'node:fs';

/** A disk image: a descriptor the caller holds (a pinned export's; `size` needed for a block device), or a path. */
export type ImageSource = { fd: number; size?: number } | { file: string };

export interface ChildLimits {
  timeoutMs: number;
  /** V8 heap of the child, MiB. */
  heapMiB: number;
  /** Its answer (one JSON line), bytes. */
  maxOutputBytes: number;
}

export type ChildAnswer = { ok: true; output: string } | { ok: false; reason: string };

/** Runs `body` with a read-only descriptor on the image: the caller's own, or one opened for the while. */
export async function withImageFd<T>(image: ImageSource, body: (fd: number) => Promise<T>): Promise<T> {
  if ('fd' in image) return body(image.fd);
  const fd = openSync(image.file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    return await body(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Runs `node workerFile REQUEST_JSON` with the image as its descriptor 3, bounded in time, heap
 * and output; `what` names it in the reasons ("the inspection took longer than 20 s ...").
 * Never rejects: whatever goes wrong is the answer's reason.
 */
export function runBoundedChild(
  what: string,
  workerFile: string,
  request: unknown,
  imageFd: number,
  limits: ChildLimits,
): Promise<ChildAnswer> {
  return new Promise((resolve) => {
    // Its own process group: on timeout the whole group goes, debugfs included.
    const child = spawn(process.execPath, [`--max-old-space-size=${limits.heapMiB}`, workerFile, JSON.stringify(request)], {
      stdio: ['ignore', 'pipe', 'pipe', imageFd],
      detached: true,
    });
    let output = '';
    let stderr = '';
    let stopped: string | null = null;
    const stop = (reason: string) => {
      stopped ??= reason;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const timer = setTimeout(() => stop(`${what} took longer than ${limits.timeoutMs / 1000} s and was stopped`), limits.timeoutMs);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.length > limits.maxOutputBytes) stop(`${what} answered more than ${limits.maxOutputBytes} bytes and was stopped`);
    });
    child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4096)));
    child.on('error', (err) => stop(`${what} could not start: ${err.message}`));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (stopped) resolve({ ok: false, reason: stopped });
      else if (code !== 0) resolve({ ok: false, reason: `${what} failed (${signal ?? `exit ${code}`}): ${lastLine(stderr)}` });
      else resolve({ ok: true, output });
    });
  });
}

/** The child's JSON answer; undefined when it is not JSON. */
export function parseAnswer(output: string): unknown {
  try {
    return JSON.parse(output);
  } catch {
    return undefined;
  }
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1)?.slice(0, 500) ?? '';
}

/**
 * Runs at most `limit` jobs at once, the rest in order of arrival: each kind of bounded child
 * (inspections, initramfs builds) has one, so a burst of requests costs `limit` children's
 * memory, never one per request.
 */
export class ChildQueue {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(job: () => Promise<T>): Promise<T> {
    while (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await job();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

/** A tool whose output is read as it comes (debugfs copying files out, an unpacker), bounded in time. */
export interface StreamingTool {
  child: ChildProcess;
  /** Its exit code and signal once it has closed; rejected when it could not even start. */
  closed: Promise<[number | null, NodeJS.Signals | null]>;
  /** Whether it was killed for running past its time. */
  timedOut(): boolean;
  /** The end of what it said on stderr. */
  stderr(): string;
  /** Kills it if it still runs: for a reader that is done with it, or gave up on it. */
  stop(): void;
}

/** Starts `command`, killed with SIGKILL once it has run `timeoutMs`; the caller reads its stdout and calls `stop` when done. */
export function startStreamingTool(
  command: string,
  args: readonly string[],
  options: { timeoutMs: number; stdio: StdioOptions },
): StreamingTool {
  const child = spawn(command, args, { stdio: options.stdio });
  const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  // Awaited by the reader once it has read what it wanted; a failure to start rejects it then.
  closed.catch(() => {});
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4096)));
  return {
    child,
    closed,
    timedOut: () => timedOut,
    stderr: () => stderr,
    stop: () => {
      clearTimeout(timer);
      child.kill('SIGKILL');
    },
  };
}
