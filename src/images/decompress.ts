import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import type { CompressedFormat } from './detect.js';
import { ImportError } from './import-error.js';
import { startTool, type ToolBounds } from './tool.js';

/**
 * The decompressed bytes of `input`, as they arrive: zlib for gzip, an `xz -dc` / `zstd -dc`
 * child otherwise, fed through a pipe (so at most a pipe's worth waits there). The child ends
 * with the iteration, and on its own at a cancel or when it idles past the bound (`bounds`).
 */
export function decompress(format: CompressedFormat, input: AsyncIterable<Buffer>, bounds: ToolBounds): AsyncIterable<Buffer> {
  return format === 'gzip' ? gunzip(input) : throughChild(format, input, bounds);
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

async function* throughChild(command: 'xz' | 'zstd', input: AsyncIterable<Buffer>, bounds: ToolBounds): AsyncGenerator<Buffer> {
  const tool = startTool(command, ['-dc'], bounds, input);
  try {
    // Killed (a cancel, the idle bound), the child's stdout ends here and `exited` says why.
    for await (const chunk of tool.child.stdout as AsyncIterable<Buffer>) yield chunk;
    const { code, stderr } = await tool.exited;
    const fed = await tool.fed;
    // A failed download (truncated, stalled) ends the tool's input early: that, not its complaint, is the cause.
    if (fed instanceof ImportError) throw fed;
    if (code !== 0)
      throw new ImportError('bad-image', `the ${command} stream is corrupt (${command} -dc: ${stderr.trim() || `exit ${code}`})`);
  } finally {
    tool.kill();
  }
}
