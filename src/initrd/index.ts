import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import {
  ChildQueue,
  parseAnswer,
  runBoundedChild,
  withImageFd,
  type ChildAnswer,
  type ChildLimits,
  type ImageSource,
} from '../bounded-child.js';
import { layoutModules } from '../inspect/inspect-image.js';
import type { BootInspection } from '../inspect/result.js';
import { isOutOfSpace } from '../db/data-dir-space.js';
import type { Logger } from '../log.js';
import type { BuildRequest } from './build.js';
import type { Kit } from './kit.js';

export { readKit, type Kit } from './kit.js';

const workerFile = fileURLToPath(new URL('./worker.js', import.meta.url));

/** As the inspection's heap: the build streams every file, so it holds no module, kernel or archive whole. */
export const defaultBuildLimits: ChildLimits = { timeoutMs: 60_000, heapMiB: 128, maxOutputBytes: 64 * 1024 };

/** Builds at once, as inspections: a burst of first boots costs two children, the rest wait their turn. */
const parallelBuilds = 2;

/** A build directory older than this was left by a killed daemon. */
const leftoverAgeMs = 60 * 60 * 1000;

const answerSchema = z.union([
  z.object({ ok: z.literal(true), modules: z.array(z.string()) }),
  z.object({ ok: z.literal(false), reason: z.string(), noSpace: z.boolean() }),
]);

/** The two files a machine boots an export from. */
export interface BootFiles {
  kernel: string;
  initrd: string;
  /** true: the image's own kernel with its modules; false: the kit's kernel and initrd. */
  own: boolean;
  /** Why the kit's (the inspection's reason, or the build's); null when own. */
  reason: string | null;
}

export interface BootFilesRequest {
  exportId: number;
  image: ImageSource;
  /** What names this version of the image (device, inode, birth time, size, mtime): a change builds anew. */
  imageIdentity: string;
  inspection: BootInspection;
}

/**
 * The kernel and initramfs of each export, built once per (image identity, kernel, kit) in a
 * bounded child, under `dir` as `EXPORTID-KEY.vmlinuz` / `EXPORTID-KEY.initrd.img`, each
 * renamed into place whole. Concurrent requests for one build wait for the same child, and at
 * most `parallelBuilds` children run at once; an export's older builds are removed once its new
 * one is in place.
 */
export class BootFilesCache {
  private readonly building = new Map<string, Promise<BootFiles>>();
  /** Builds that failed, by stem: asked again, they fall back at once instead of failing again. */
  private readonly failed = new Map<string, string>();
  private readonly queue = new ChildQueue(parallelBuilds);

  private constructor(
    private readonly dir: string,
    private readonly kit: Kit,
    private readonly log: Logger,
    private readonly limits: ChildLimits,
  ) {}

  /** Creates the directory and removes what a killed daemon left half-built. */
  static async open(dir: string, kit: Kit, log: Logger, limits: ChildLimits = defaultBuildLimits): Promise<BootFilesCache> {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    for (const name of await fs.readdir(dir)) {
      const file = path.join(dir, name);
      if (name.startsWith('.build-') && Date.now() - (await fs.stat(file)).mtimeMs > leftoverAgeMs)
        await fs.rm(file, { recursive: true, force: true });
    }
    return new BootFilesCache(dir, kit, log, limits);
  }

  /** The export's own kernel and initramfs when its inspection is ready and they build; else the kit's. */
  filesFor(request: BootFilesRequest): Promise<BootFiles> {
    const { inspection } = request;
    if (!inspection.ready || inspection.kernel === null) return Promise.resolve(this.kitFiles(inspection.reason ?? 'not inspected yet'));
    const key = crypto
      .createHash('sha256')
      .update(
        JSON.stringify([
          request.imageIdentity,
          inspection.kernel,
          inspection.kernelPath,
          inspection.partitionOffset,
          inspection.kernelOffset,
          this.kit.id,
        ]),
      )
      .digest('hex')
      .slice(0, 16);
    const stem = path.join(this.dir, `${request.exportId}-${key}`);
    const failure = this.failed.get(stem);
    if (failure) return Promise.resolve(this.kitFiles(failure));
    let build = this.building.get(stem);
    if (!build) {
      build = this.cachedOrBuilt(request, stem).finally(() => this.building.delete(stem));
      this.building.set(stem, build);
    }
    return build;
  }

  /** Removes a removed export's builds. */
  async forget(exportId: number): Promise<void> {
    await this.removeBuilds(exportId, null);
    for (const stem of this.failed.keys()) if (path.basename(stem).startsWith(`${exportId}-`)) this.failed.delete(stem);
  }

  private async cachedOrBuilt(request: BootFilesRequest, stem: string): Promise<BootFiles> {
    const own: BootFiles = { kernel: `${stem}.vmlinuz`, initrd: `${stem}.initrd.img`, own: true, reason: null };
    // The initrd is renamed into place last: there, both are whole.
    if (await exists(own.initrd)) return own;
    return this.queue.run(() => this.build(request, own, stem));
  }

  private async build(request: BootFilesRequest, own: BootFiles, stem: string): Promise<BootFiles> {
    const started = Date.now();
    const outDir = await fs.mkdtemp(path.join(this.dir, '.build-')).catch((err: unknown) => {
      if (isOutOfSpace(err)) return null;
      throw err;
    });
    if (outDir === null)
      return this.kitFiles(
        `the data dir has no room left at ${this.dir}: free space there, and the next boot request builds the image's files again`,
      );
    try {
      const buildRequest: BuildRequest = {
        size: 'size' in request.image ? request.image.size : undefined,
        partitionOffset: request.inspection.partitionOffset ?? 0,
        // Inspections stored before a separate /boot was read have no kernelOffset: their kernel is in the root.
        kernelOffset: request.inspection.kernelOffset ?? request.inspection.partitionOffset ?? 0,
        kernelPath: request.inspection.kernelPath ?? '',
        modulesDir: request.inspection.modulesDir ?? '',
        kitInitrd: this.kit.initrd,
        kitLoadOrder: this.kit.loadOrder,
        rootModules: [...this.kit.rootModules, ...layoutModules(request.inspection)],
        outDir,
      };
      const outcome = outcomeOf(
        await withImageFd(request.image, (fd) => runBoundedChild('the initramfs build', workerFile, buildRequest, fd, this.limits)),
      );
      if ('reason' in outcome) {
        this.log.warn('cannot build the boot files of an image: its machines boot the kit kernel', {
          exportId: request.exportId,
          reason: outcome.reason,
        });
        // Space freed later builds it at the next request; the image's own faults stay.
        if (!outcome.noSpace) this.failed.set(stem, outcome.reason);
        return this.kitFiles(outcome.reason);
      }
      await fs.rename(path.join(outDir, 'vmlinuz'), own.kernel);
      await fs.rename(path.join(outDir, 'initrd.img'), own.initrd);
      await this.removeBuilds(request.exportId, path.basename(stem));
      this.log.info('boot files built', {
        exportId: request.exportId,
        kernel: request.inspection.kernel,
        modules: outcome.modules.length,
        ms: Date.now() - started,
      });
      return own;
    } finally {
      await fs.rm(outDir, { recursive: true, force: true });
    }
  }

  private kitFiles(reason: string): BootFiles {
    return { kernel: this.kit.vmlinuz, initrd: this.kit.initrd, own: false, reason };
  }

  /** Removes the export's builds but `keepStem`'s. */
  private async removeBuilds(exportId: number, keepStem: string | null): Promise<void> {
    for (const name of await fs.readdir(this.dir)) {
      if (name.startsWith(`${exportId}-`) && !name.startsWith(`${keepStem}.`)) await fs.rm(path.join(this.dir, name), { force: true });
    }
  }
}

function outcomeOf(answer: ChildAnswer): { modules: string[] } | { reason: string; noSpace: boolean } {
  if (!answer.ok) return { reason: answer.reason, noSpace: false };
  const parsed = answerSchema.safeParse(parseAnswer(answer.output));
  if (!parsed.success) return { reason: 'the initramfs build answered something unreadable', noSpace: false };
  return parsed.data.ok ? { modules: parsed.data.modules } : { reason: parsed.data.reason, noSpace: parsed.data.noSpace };
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
