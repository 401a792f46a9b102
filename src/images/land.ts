import { headBytes, type CompressedFormat } from './detect.js';
import { ImportError } from './import-error.js';
import { startTool, type Tool, type ToolBounds } from './tool.js';

/** Where the bytes come from: chunks nbdmux feeds (the download), or a file landed before (its descriptor). */
export type LandSource = AsyncIterable<Buffer> | { file: number };

/** errno values nbdmux-sparse-write exits with when the disk is full. */
const outOfSpaceExits = new Set([28 /* ENOSPC */, 122 /* EDQUOT */]);
/** nbdmux-sparse-write's exit once the store is down to its reserve. */
const reserveExit = 3;

/** The image store as the writer needs it: its reserve, and the check that says how full it is. */
export interface LandSpace {
  reservedBytes: number;
  /** Throws the store's no-space error once it is down to its reserve. */
  checkSpace: () => void;
}

/**
 * Writes `source` into the new file `out`, decompressed by its tool (`xz -dc`, `zstd -dc`,
 * `gzip -dc`) when `format` says so, through nbdmux-sparse-write (zero blocks left as holes, 1 MiB
 * aligned writes, synced when `durable`): the tool's stdout is the writer's stdin, so no decompressed byte passes
 * through nbdmux. The writer stops once the store is down to its reserve (checked after every
 * MiB, as the bytes land). Resolves with the
 * first `headBytes` of what was written, to tell its format. Every child ends with it, and at a
 * cancel or when it idles past the bound (`bounds`).
 */
export async function land(
  source: LandSource,
  format: CompressedFormat | null,
  out: string,
  bounds: ToolBounds,
  space: LandSpace,
  durable: boolean,
): Promise<Buffer> {
  const tools: Tool[] = [];
  try {
    const decompressor = format === null ? null : startTool(format, ['-dc'], bounds, source);
    if (decompressor) tools.push(decompressor);
    const writer = startTool(
      'nbdmux-sparse-write',
      [out, String(headBytes), String(space.reservedBytes), durable ? 'sync' : 'no-sync'],
      bounds,
      decompressor ? { tool: decompressor } : source,
    );
    tools.push(writer);
    const head: Buffer[] = [];
    for await (const chunk of writer.child.stdout as AsyncIterable<Buffer>) head.push(chunk);
    const written = await writer.exited;
    const decompressed = await decompressor?.exited;
    // A failed download (truncated, stalled) ends the input early: that, not a tool's complaint, is the cause.
    const fed = await (decompressor ?? writer).fed;
    if (fed instanceof ImportError) throw fed;
    // The writer first: once it fails, the decompressor dies of the broken pipe, which says nothing about the image.
    if (written.code === reserveExit) space.checkSpace();
    if (written.code !== 0) throw writeError(written.code, written.stderr);
    if (decompressed && decompressed.code !== 0)
      throw new ImportError(
        'bad-image',
        `the ${format} stream is corrupt (${format} -dc: ${decompressed.stderr.trim() || `exit ${decompressed.code}`})`,
      );
    return Buffer.concat(head);
  } finally {
    for (const tool of tools) tool.kill();
  }
}

function writeError(code: number | null, stderr: string): ImportError {
  // At the reserve, space freed again since (another import's file removed) finds the check passing: still out of room here.
  if (code !== null && (outOfSpaceExits.has(code) || code === reserveExit))
    return new ImportError(
      'no-space',
      'the image store ran out of space while writing the image: free space there (or use a larger --image-store), then import again',
    );
  return new ImportError(
    'io',
    `writing the image into the store failed (nbdmux-sparse-write: ${stderr.trim() || `exit ${code}`}): check the image store's disk`,
  );
}
