import fs from 'node:fs';
import { detectFormat, headBytes, isCompressed, isContainer, type CompressedFormat, type ImageFormat } from './detect.js';
import { openDownload } from './fetch.js';
import { cancelled, ImportError } from './import-error.js';
import { land, type LandSpace } from './land.js';
import type { MinRate } from './min-rate.js';
import type { ProgressMeter } from './progress.js';
import { convertToRaw, inspectContainer } from './qemu-img.js';
import { Sha256Worker } from './sha256-worker.js';
import type { ImageStore } from './store.js';
import type { ToolBounds } from './tool.js';

export interface ImportedImage {
  /** The final path inside the image store. */
  file: string;
  size: number;
  /** Of the downloaded bytes, as publishers sign them. */
  sha256: string;
}

export interface PipelineOptions {
  store: ImageStore;
  imageRoots: readonly string[];
  connectTimeoutMs: number;
  stallTimeoutMs: number;
  minRate: MinRate;
  /** A tool (gzip, xz, zstd, qemu-img, the sparse writer) that reads and writes nothing this long is killed. */
  toolIdleMs: number;
}

export interface ImportJob {
  key: string;
  url: string;
  sha256?: string;
}

/** Compressed inside compressed is unwrapped this many times at most (qcow2 in xz needs one). */
const maxCompressionLayers = 2;

/**
 * One import, start to end: download (hashed on a worker thread), unwrap compression as it
 * arrives (the tool's output piped straight into the sparse writer, never through the event loop),
 * land the bytes in a partial file, check the sha256 of what was downloaded, convert a container
 * to raw, and give the result its final name. On any failure every file it made is removed, and
 * every child and the worker are ended, before it rejects.
 */
export async function runImport(
  job: ImportJob,
  options: PipelineOptions,
  meter: ProgressMeter,
  signal: AbortSignal,
): Promise<ImportedImage> {
  const { store } = options;
  const tools = { signal, idleMs: options.toolIdleMs };
  const made: string[] = [];
  let stream: AsyncIterableIterator<Buffer> | undefined;
  const hash = new Sha256Worker();
  try {
    meter.enter('downloading', 0, null);
    const download = await openDownload(job.url, { ...options, signal });
    let downloaded = 0;
    meter.enter('downloading', 0, download.totalBytes);
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const chunk of download.body) {
        // A file:// source does not listen to the signal itself.
        if (signal.aborted) throw cancelled();
        await hash.update(chunk);
        downloaded += chunk.length;
        meter.update(downloaded);
        yield chunk;
      }
    }
    let format: ImageFormat;
    ({ format, stream } = await sniff(counted()));
    if (download.totalBytes !== null) store.ensureRoomFor(download.totalBytes, `the download of ${job.url}`);

    let landed = store.partialPath(job.key, 'download');
    made.push(landed);
    if (isCompressed(format)) meter.enter('decompressing', downloaded, download.totalBytes);
    // A container's download is read once by qemu-img and removed: only the raw image it becomes must be durable.
    const head = await land(stream, isCompressed(format) ? format : null, landed, tools, store, !isContainer(format));
    if (isCompressed(format)) format = detectFormat(head);
    // Compressed inside compressed: the inner stream is landed first (its head tells), then unwrapped from that file.
    for (let layers = 1; isCompressed(format); layers++) {
      if (layers === maxCompressionLayers)
        throw new ImportError(
          'bad-image',
          `the image is compressed more than ${maxCompressionLayers} times over: decompress it once before publishing`,
        );
      const inner = store.partialPath(job.key, 'download');
      made.push(inner);
      format = detectFormat(await landFile(landed, format, inner, tools, store));
      await store.remove(landed);
      landed = inner;
    }

    meter.enter('verifying', downloaded, download.totalBytes);
    const sha256 = await hash.digest();
    if (job.sha256 !== undefined && sha256 !== job.sha256.toLowerCase()) {
      throw new ImportError(
        'sha256-mismatch',
        `the downloaded bytes have sha256 ${sha256}, not the expected ${job.sha256.toLowerCase()}: the download is corrupt or not the published image; nothing was kept`,
      );
    }

    let raw = landed;
    if (isContainer(format)) {
      const container = format;
      const virtualSize = await inspectContainer(landed, container, tools);
      store.ensureRoomFor(virtualSize, `the ${container} image's virtual size`);
      raw = store.partialPath(job.key, 'raw');
      made.push(raw);
      meter.enter('converting', 0, virtualSize);
      await convertToRaw(landed, container, raw, tools, (fraction) => meter.update(Math.round(fraction * virtualSize)), store.checkSpace);
      // Its last step may fall between reports: the stage ends shown whole.
      meter.update(virtualSize, true);
      // Both wait on the disk; the download's removal need not wait for the image's sync. Settled both: none left unawaited.
      const [synced, removed] = await Promise.allSettled([syncPrivate(raw), store.remove(landed)]);
      for (const outcome of [synced, removed]) if (outcome.status === 'rejected') throw outcome.reason;
    }
    const { size } = await fs.promises.stat(raw);
    if (size === 0) throw new ImportError('bad-image', `${job.url} holds no bytes: there is nothing to serve`);
    return { file: await store.keep(raw, job.key, sha256), size, sha256 };
  } catch (err) {
    await stream?.return?.();
    await hash.stop();
    for (const file of made) await store.remove(file);
    if (signal.aborted) throw cancelled();
    if (err instanceof ImportError) throw err;
    throw new ImportError('io', `the import failed: ${(err as Error).message}`, { cause: err });
  }
}

/** Unwraps one more layer: the landed `file` decompressed into `out`; resolves with its head. */
async function landFile(file: string, format: CompressedFormat, out: string, tools: ToolBounds, space: LandSpace): Promise<Buffer> {
  const handle = await fs.promises.open(file, 'r');
  try {
    return await land({ file: handle.fd }, format, out, tools, space, true);
  } finally {
    await handle.close();
  }
}

/** Reads enough of `input` to tell its format, and hands back the whole stream, those bytes first. */
async function sniff(input: AsyncIterable<Buffer>): Promise<{ format: ImageFormat; stream: AsyncIterableIterator<Buffer> }> {
  const iterator = input[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let length = 0;
  while (length < headBytes) {
    const next = await iterator.next();
    if (next.done) break;
    head.push(next.value);
    length += next.value.length;
  }
  const format = detectFormat(Buffer.concat(head));
  // Not a generator: return() must reach the source even when nothing was read yet.
  const stream: AsyncIterableIterator<Buffer> = {
    next: async () => (head.length > 0 ? { done: false, value: head.shift()! } : iterator.next()),
    return: async () => {
      await iterator.return?.();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]: () => stream,
  };
  return { format, stream };
}

/**
 * qemu-img creates its output with the process umask: make it private like the rest, and durable
 * before it is renamed. Off the event loop: syncing a converted GiB takes a while.
 */
async function syncPrivate(file: string): Promise<void> {
  const handle = await fs.promises.open(file, 'r+');
  try {
    await handle.chmod(0o600);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
