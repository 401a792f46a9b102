import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { decompress } from './decompress.js';
import { detectFormat, headBytes, isCompressed, isContainer, type ImageFormat } from './detect.js';
import { openDownload } from './fetch.js';
import { cancelled, ImportError } from './import-error.js';
import type { MinRate } from './min-rate.js';
import type { ProgressMeter } from './progress.js';
import { convertToRaw, inspectContainer } from './qemu-img.js';
import { SparseWriter } from './sparse-writer.js';
import type { ImageStore } from './store.js';

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
  /** A tool (xz, zstd, qemu-img) that reads and writes nothing this long is killed. */
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
 * One import, start to end: download, unwrap compression as it arrives, land the bytes in a
 * partial file, check the sha256 of what was downloaded, convert a container to raw, and give the
 * result its final name. On any failure every file it made is removed before it rejects.
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
  try {
    meter.enter('downloading', 0, null);
    const download = await openDownload(job.url, { ...options, signal });
    const hash = createHash('sha256');
    let downloaded = 0;
    meter.enter('downloading', 0, download.totalBytes);
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const chunk of download.body) {
        // A file:// source does not listen to the signal itself.
        if (signal.aborted) throw cancelled();
        hash.update(chunk);
        downloaded += chunk.length;
        meter.update(downloaded);
        yield chunk;
      }
    }
    let format: ImageFormat;
    ({ format, stream } = await sniff(counted()));
    for (let layers = 0; isCompressed(format); layers++) {
      if (layers === maxCompressionLayers)
        throw new ImportError(
          'bad-image',
          `the image is compressed more than ${maxCompressionLayers} times over: decompress it once before publishing`,
        );
      meter.enter('decompressing', downloaded, download.totalBytes);
      ({ format, stream } = await sniff(decompress(format, stream, tools)));
    }
    if (download.totalBytes !== null) store.ensureRoomFor(download.totalBytes, `the download of ${job.url}`);

    const container = isContainer(format) ? format : null;
    const landed = store.partialPath(job.key, container ? 'download' : 'raw');
    made.push(landed);
    const writer = await SparseWriter.create(landed, store.checkSpace);
    try {
      // Long after the download (which hears the cancel) has ended, gzip may still inflate here in
      // process, turning the last kilobytes into gigabytes: the cancel must stop this loop too.
      for await (const chunk of stream) {
        if (signal.aborted) throw cancelled();
        await writer.write(chunk);
      }
      await writer.finish();
    } finally {
      await writer.close();
    }

    meter.enter('verifying', downloaded, download.totalBytes);
    const sha256 = hash.digest('hex');
    if (job.sha256 !== undefined && sha256 !== job.sha256.toLowerCase()) {
      throw new ImportError(
        'sha256-mismatch',
        `the downloaded bytes have sha256 ${sha256}, not the expected ${job.sha256.toLowerCase()}: the download is corrupt or not the published image; nothing was kept`,
      );
    }

    let raw = landed;
    if (container !== null) {
      const virtualSize = await inspectContainer(landed, container, tools);
      store.ensureRoomFor(virtualSize, `the ${container} image's virtual size`);
      raw = store.partialPath(job.key, 'raw');
      made.push(raw);
      meter.enter('converting', 0, virtualSize);
      await convertToRaw(landed, container, raw, tools, (fraction) => meter.update(Math.round(fraction * virtualSize)), store.checkSpace);
      // Its last step may fall between reports: the stage ends shown whole.
      meter.update(virtualSize, true);
      syncPrivate(raw);
      store.remove(landed);
    }
    const size = fs.statSync(raw).size;
    if (size === 0) throw new ImportError('bad-image', `${job.url} holds no bytes: there is nothing to serve`);
    return { file: store.keep(raw, job.key, sha256), size, sha256 };
  } catch (err) {
    await stream?.return?.();
    for (const file of made) store.remove(file);
    if (signal.aborted) throw cancelled();
    if (err instanceof ImportError) throw err;
    throw new ImportError('io', `the import failed: ${(err as Error).message}`, { cause: err });
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

/** qemu-img creates its output with the process umask: make it private like the rest, and durable before it is renamed. */
function syncPrivate(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.fchmodSync(fd, 0o600);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
