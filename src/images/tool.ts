import { spawn, type ChildProcessByStdio } from 'node:child_process';
import fs from 'node:fs';
import { Readable, type Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pipeline } from 'node:stream/promises';
import { ImportError } from './import-error.js';

/** Every program an import runs, with what installs it. */
const installs = {
  gzip: 'install the gzip package',
  xz: 'install the xz-utils package',
  zstd: 'install the zstd package',
  'qemu-img': 'install the qemu-utils package',
  'nbdmux-sparse-write': 'run `npm run build` with a C compiler (cc) installed',
} as const;

export type ToolCommand = keyof typeof installs;

/**
 * nbdmux's own program, built by `npm run build` into dist/native/: found there from dist/src/images/,
 * and from src/images/ too (the unit tests import the sources, with the build beside them).
 */
const sparseWriter = fileURLToPath(
  new URL(
    import.meta.url.includes('/dist/src/') ? '../../native/nbdmux-sparse-write' : '../../dist/native/nbdmux-sparse-write',
    import.meta.url,
  ),
);

/**
 * What a tool reads on stdin: chunks nbdmux feeds it, a file (its descriptor), or the stdout of
 * another tool, the kernel's pipe between them (no byte passes through nbdmux).
 */
export type ToolInput = AsyncIterable<Buffer> | { file: number } | { tool: Tool } | null;

/** What ends a tool early: the import's cancel, and a tool that does nothing for too long. */
export interface ToolBounds {
  signal: AbortSignal;
  /** A tool that reads and writes nothing this long, its input there, is killed (--import-tool-timeout). */
  idleMs: number;
}

export interface ToolExit {
  code: number | null;
  /** The end of what it said on stderr. */
  stderr: string;
}

export interface Tool {
  child: ChildProcessByStdio<Writable | null, Readable, Readable>;
  /**
   * Settles once the tool has exited: with its exit code, or rejected (the tool killed first) with
   * the abort's reason, a `tool-timeout` once it has been idle too long, or `tool-failed` when it
   * could not start.
   */
  exited: Promise<ToolExit>;
  /** With an input: resolves once it is fed, with the error that ended it early if one did (else null). */
  fed: Promise<unknown>;
  /** Kills the tool if it still runs, and stops feeding it: for a caller that no longer wants its output. */
  kill(): void;
}

/**
 * Starts one of the import's tools under its bounds, feeding it `input` on stdin if given. Every
 * child of an import goes through here, so none outlives a cancel or hangs on a hostile input (a
 * vmdk extent naming a FIFO blocks `qemu-img info` in open(), doing nothing, for ever).
 */
export function startTool(command: ToolCommand, args: string[], bounds: ToolBounds, input: ToolInput): Tool {
  const { signal, idleMs } = bounds;
  const chunks = input !== null && Symbol.asyncIterator in input ? input : null;
  const upstream = input !== null && 'tool' in input ? input.tool : null;
  const stdin = input === null ? 'ignore' : chunks ? 'pipe' : upstream ? upstream.child.stdout : (input as { file: number }).file;
  const child = spawn(command === 'nbdmux-sparse-write' ? sparseWriter : command, args, {
    stdio: [stdin, 'pipe', 'pipe'],
  }) as Tool['child'];
  // The child holds its own copy now: without closing ours, the writer would never see the reader end.
  upstream?.child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  // A tool waiting for the download is not stuck: the download has bounds of its own (stalled, too slow).
  let awaitingInput = false;
  const source = chunks && Readable.from(marked(chunks, (waiting) => (awaitingInput = waiting)));
  // The tool's exit code says whether its input was good; the pipe's own EPIPE adds nothing.
  const fed = source
    ? pipeline(source, child.stdin!).then(
        () => null,
        (err: unknown) => err,
      )
    : Promise.resolve(null);
  let killedFor: Error | null = null;
  const kill = (why: Error | null) => {
    killedFor ??= why;
    source?.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const onAbort = () => kill(signal.reason as Error);
  // Fed by another tool, a tool waits on it, and that one is watched: a hung disk here stops it too, its output unread.
  const idle = watchIdle(
    child.pid,
    idleMs,
    () => awaitingInput || upstream !== null,
    () => kill(idleError(command, args, idleMs)),
  );
  const exited = new Promise<ToolExit>((resolve, reject) => {
    child.on('error', (err) => {
      killedFor ??= new ImportError('tool-failed', `cannot run ${command} (${err.message}): ${installs[command]}`);
    });
    child.on('close', (code) => {
      clearInterval(idle);
      signal.removeEventListener('abort', onAbort);
      if (killedFor !== null) reject(killedFor);
      else resolve({ code, stderr });
    });
  });
  // A caller that stopped early may never await it; the kill was its own doing.
  exited.catch(() => {});
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  return { child, exited, fed, kill: () => kill(null) };
}

/** `input` as it is, telling `onWait` while the next chunk is awaited. */
async function* marked(input: AsyncIterable<Buffer>, onWait: (waiting: boolean) => void): AsyncGenerator<Buffer> {
  onWait(true);
  try {
    for await (const chunk of input) {
      onWait(false);
      yield chunk;
      onWait(true);
    }
  } finally {
    onWait(false);
  }
}

/**
 * Calls `onIdle` once the process has read and written nothing (its /proc I/O counters, which
 * count pipes and files alike, unchanged) for `idleMs`, not counting time its input was awaited.
 */
function watchIdle(pid: number | undefined, idleMs: number, awaitingInput: () => boolean, onIdle: () => void): NodeJS.Timeout {
  let last = ioCount(pid);
  let lastBusyAt = Date.now();
  const timer = setInterval(
    () => {
      const now = ioCount(pid);
      if (now !== last || awaitingInput()) {
        last = now;
        lastBusyAt = Date.now();
      } else if (Date.now() - lastBusyAt >= idleMs) {
        clearInterval(timer);
        onIdle();
      }
    },
    Math.min(1000, Math.max(50, idleMs / 4)),
  );
  return timer;
}

/** rchar and wchar of /proc/PID/io; null when they cannot be read (the tool gone, or never started). */
function ioCount(pid: number | undefined): string | null {
  if (pid === undefined) return null;
  try {
    const io = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
    return `${/^rchar: (\d+)$/m.exec(io)?.[1]}/${/^wchar: (\d+)$/m.exec(io)?.[1]}`;
  } catch {
    return null;
  }
}

function idleError(command: ToolCommand, args: string[], idleMs: number): ImportError {
  return new ImportError(
    'tool-timeout',
    `${command} ${args[0]} read and wrote nothing for ${idleMs / 1000} s (--import-tool-timeout), so it was killed: the image makes it wait on something (a vmdk extent naming a FIFO or a device does), or the image store's disk hangs; check the image and the disk`,
  );
}
