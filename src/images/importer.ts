import { errorText, type Logger } from '../log.js';
import { cancelled, type ImportError } from './import-error.js';
import type { MinRate } from './min-rate.js';
import { runImport, type ImportedImage, type ImportJob } from './pipeline.js';
import { ProgressMeter, type ImportProgress } from './progress.js';
import { ImageStore } from './store.js';

export { ImportError, type ImportFailure } from './import-error.js';

export interface ImporterOptions {
  storeDir: string;
  maxImports: number;
  imageRoots: readonly string[];
  log: Logger;
  /** A server that does not accept the connection this long fails the import (default 15 s). */
  connectTimeoutMs?: number;
  /** A server that sends no byte this long fails the import as stalled (default 30 s). */
  stallTimeoutMs?: number;
  /** A server slower than this fails the import as too slow (default 64 KiB per 60 s; 0 bytes: no minimum). */
  minRate?: MinRate;
  /** xz, zstd or qemu-img reading and writing nothing this long is killed, failing the import (default 60 s). */
  toolIdleMs?: number;
}

export const defaultMinRate: MinRate = { bytes: 64 << 10, windowMs: 60_000 };

interface Queued {
  job: ImportJob;
  meter: ProgressMeter;
  controller: AbortController;
  resolve: (image: ImportedImage) => void;
  reject: (err: ImportError) => void;
}

/** Runs imports into the image store, at most `maxImports` at once; the rest wait in order. */
export class Importer {
  private readonly store: ImageStore;
  private readonly waiting: Queued[] = [];
  private running = 0;

  constructor(private readonly options: ImporterOptions) {
    this.store = new ImageStore(options.storeDir);
  }

  /** Queues an import; progress at most a few times a second; `done` rejects with an ImportError on failure or cancel. */
  start(job: ImportJob, onProgress: (progress: ImportProgress) => void): { done: Promise<ImportedImage>; cancel: () => void } {
    const meter = new ProgressMeter(onProgress);
    const controller = new AbortController();
    let entry!: Queued;
    const done = new Promise<ImportedImage>((resolve, reject) => {
      entry = { job, meter, controller, resolve, reject };
    });
    meter.enter('queued', 0, null);
    this.waiting.push(entry);
    this.next();
    return {
      done,
      cancel: () => {
        const index = this.waiting.indexOf(entry);
        if (index >= 0) {
          this.waiting.splice(index, 1);
          entry.reject(cancelled());
        }
        controller.abort(cancelled());
      },
    };
  }

  /** At daemon start: removes partial files an earlier run left in the store; returns their names. */
  removeLeftovers(): string[] {
    return this.store.removeLeftovers();
  }

  private next(): void {
    while (this.running < this.options.maxImports && this.waiting.length > 0) {
      const entry = this.waiting.shift()!;
      this.running++;
      void this.run(entry).finally(() => {
        this.running--;
        this.next();
      });
    }
  }

  private async run({ job, meter, controller, resolve, reject }: Queued): Promise<void> {
    const { log } = this.options;
    log.info('import started', { key: job.key, url: job.url });
    try {
      const image = await runImport(
        job,
        {
          store: this.store,
          imageRoots: this.options.imageRoots,
          connectTimeoutMs: this.options.connectTimeoutMs ?? 15_000,
          stallTimeoutMs: this.options.stallTimeoutMs ?? 30_000,
          minRate: this.options.minRate ?? defaultMinRate,
          toolIdleMs: this.options.toolIdleMs ?? 60_000,
        },
        meter,
        controller.signal,
      );
      log.info('import done', { key: job.key, file: image.file, size: image.size });
      resolve(image);
    } catch (err) {
      const failure = err as ImportError;
      // Only an unforeseen error is nbdmux's own problem; the others are the source's, said in the message.
      if (failure.reason === 'io') log.error('import failed', { key: job.key, url: job.url, error: errorText(failure.cause) });
      else log.warn('import failed', { key: job.key, url: job.url, reason: failure.reason, message: failure.message });
      reject(failure);
    }
  }
}
