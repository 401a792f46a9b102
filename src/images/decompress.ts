import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import type { CompressedFormat } from './detect.js';
import { ImportError } from './import-error.js';

const tools = { xz: { command: 'xz', package: 'xz-utils' }, zstd: { command: 'zstd', package: 'zstd' } } as const;

/**
 * The decompressed bytes of `input`, as they arrive: zlib for gzip, an `xz -dc` / `zstd -dc`
 * child otherwise, fed through a pipe (so at most a pipe's worth waits there). Stopping the
 * iteration (a failure or a cancel) kills the child.
 */
export function decompress(format: CompressedFormat, input: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  return format === 'gzip' ? gunzip(input) : throughChild(tools[format], input);
}

async function* gunzip(input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const source = Readable.from(input);
  const inflate = zlib.createGunzip();
  const feeding = pipeline(source, inflate).then(
    () => null,
    (err: unknown) => err,
  );
  try {
    for await (const chunk of inflate as AsyncIterable<Buffer>) yield chunk;
  } catch (err) {
    const fed = await feeding;
    throw fed instanceof ImportError ? fed : new ImportError('bad-image', `the gzip stream is corrupt: ${(err as Error).message}`);
  } finally {
    source.destroy();
    inflate.destroy();
  }
}

async function* throughChild(tool: (typeof tools)[keyof typeof tools], input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const child = spawn(tool.command, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-2000)));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const spawnFailure = new Promise<never>((_resolve, reject) =>
    child.on('error', (err) => reject(new ImportError('tool-failed', `cannot run ${tool.command} (${err.message}): install the ${tool.package} package`))),
  );
  spawnFailure.catch(() => {});
  const source = Readable.from(input);
  // The child's exit code says whether its input was good; the pipe's own EPIPE adds nothing.
  const feeding = pipeline(source, child.stdin).then(
    () => null,
    (err: unknown) => err,
  );
  try {
    for await (const chunk of child.stdout as AsyncIterable<Buffer>) yield chunk;
    const [fed, code] = await Promise.race([Promise.all([feeding, exited]), spawnFailure]);
    // A failed download (truncated, stalled) ends xz's input early: that, not xz's complaint, is the cause.
    if (fed instanceof ImportError) throw fed;
    if (code !== 0) throw new ImportError('bad-image', `the ${tool.command} stream is corrupt (${tool.command} -dc: ${stderr.trim() || `exit ${code}`})`);
  } finally {
    source.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}
