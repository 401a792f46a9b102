import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ImportError } from './import-error.js';

/** Every program an import runs, with the package that installs it. */
const packages = { xz: 'xz-utils', zstd: 'zstd', 'qemu-img': 'qemu-utils' } as const;

export type ToolCommand = keyof typeof packages;

/** What ends a tool early: the import's cancel. */
export interface ToolBounds {
  signal: AbortSignal;
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
   * the abort's reason, or `tool-failed` when it could not start.
   */
  exited: Promise<ToolExit>;
  /** With an input: resolves once it is fed, with the error that ended it early if one did (else null). */
  fed: Promise<unknown>;
  /** Kills the tool if it still runs, and stops feeding it: for a caller that no longer wants its output. */
  kill(): void;
}

/**
 * Starts one of the import's tools under its bounds, feeding it `input` on stdin if given. Every
 * child of an import goes through here, so none outlives a cancel, whatever stage it is in.
 */
export function startTool(command: ToolCommand, args: string[], bounds: ToolBounds, input: AsyncIterable<Buffer> | null): Tool {
  const { signal } = bounds;
  const child: Tool['child'] = input ? spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] }) : spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const source = input && Readable.from(input);
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
  const exited = new Promise<ToolExit>((resolve, reject) => {
    child.on('error', (err) => {
      killedFor ??= new ImportError('tool-failed', `cannot run ${command} (${err.message}): install the ${packages[command]} package`);
    });
    child.on('close', (code) => {
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
