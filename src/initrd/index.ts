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
import { nicKey, type NicId } from '../inspect/nic-drivers.js';
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
  z.object({ ok: z.literal(false), reason: z.string(), noSpace: z.boolean(), noNicDriver: z.boolean() }),
]);

/** The two files a machine boots an export from. */
export interface BootFiles {
  kernel: string;
  initrd: string;
  /** true: the image's own kernel with its modules; false: the kit's kernel and initrd. */
  own: boolean;
  /** Why the kit's (the inspection's reason, or the build's); null when own. */
  reason: string | null;
  /** The kit's because of the machine's NIC alone: a machine with another NIC may boot the image's own. */
  forNic: boolean;
}

export interface BootFilesRequest {
  exportId: number;
  image: ImageSource;
  /** What names this version of the image (device, inode, birth time, size, mtime): a change builds anew. */
  imageIdentity: string;
  inspection: BootInspection;
  /** The NIC the machine booted from, when its script named it: only its driver is needed of the kit's NIC drivers. */
  nic?: NicId | null;
}

/**
 * The kernel and initramfs of each export, built once per (image identity, kernel, kit, NIC) in a
 * bounded child, under `dir` as `EXPORTID-KEY-NIC.vmlinuz` / `EXPORTID-KEY-NIC.initrd.img` (NIC:
 * `any`, or the machine's NIC model as `8086-100e`), each
 * renamed into place whole. Concurrent requests for one build wait for the same child, and at
 * most `parallelBuilds` children run at once; an export's older builds are removed once its new
 * one is in place.
 */
export class BootFilesCache {
  private readonly building = new Map<string, Promise<BootFiles>>();
  /** Builds that failed, by stem: asked again, they fall back at once instead of failing again. */
  private readonly failed = new Map<string, { reason: string; forNic: boolean }>();
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
    const nic = request.nic ?? null;
    if (!inspection.ready || inspection.kernel === null) return Promise.resolve(this.kitFiles(inspection.reason ?? 'not inspected yet'));
    if (nic === null && inspection.devicesMissing.length > 0)
      return Promise.resolve(this.kitFiles(withoutNicReason(inspection.devicesMissing), true));
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
    // Builds for a named NIC carry its driver alone: one build per NIC model the image's machines have, kept side by side.
    const stem = path.join(this.dir, `${request.exportId}-${key}-${nic === null ? 'any' : nicKey(nic)}`);
    const failure = this.failed.get(stem);
    if (failure) return Promise.resolve(this.kitFiles(failure.reason, failure.forNic));
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
    const own: BootFiles = { kernel: `${stem}.vmlinuz`, initrd: `${stem}.initrd.img`, own: true, reason: null, forNic: false };
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
        deviceModules: this.kit.deviceModules,
        deviceAliases: this.kit.deviceAliases,
        nic: request.nic ?? null,
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
        if (!outcome.noSpace) this.failed.set(stem, { reason: outcome.reason, forNic: outcome.noNicDriver });
        return this.kitFiles(outcome.reason, outcome.noNicDriver);
      }
      await fs.rename(path.join(outDir, 'vmlinuz'), own.kernel);
      await fs.rename(path.join(outDir, 'initrd.img'), own.initrd);
      await this.removeBuilds(request.exportId, path.basename(stem).slice(0, path.basename(stem).lastIndexOf('-')));
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

  private kitFiles(reason: string, forNic = false): BootFiles {
    return { kernel: this.kit.vmlinuz, initrd: this.kit.initrd, own: false, reason, forNic };
  }

  /** Removes the export's builds but those of `keepKey` (its builds for each NIC). */
  private async removeBuilds(exportId: number, keepKey: string | null): Promise<void> {
    for (const name of await fs.readdir(this.dir)) {
      if (name.startsWith(`${exportId}-`) && !name.startsWith(`${keepKey}-`)) await fs.rm(path.join(this.dir, name), { force: true });
    }
  }
}

function outcomeOf(answer: ChildAnswer): { modules: string[] } | { reason: string; noSpace: boolean; noNicDriver: boolean } {
  if (!answer.ok) return { reason: answer.reason, noSpace: false, noNicDriver: false };
  const parsed = answerSchema.safeParse(parseAnswer(answer.output));
  if (!parsed.success) return { reason: 'the initramfs build answered something unreadable', noSpace: false, noNicDriver: false };
  return parsed.data.ok ? { modules: parsed.data.modules } : parsed.data;
}

/** Why a machine that did not name its NIC boots the kit's kernel: the image's lacks some of the NIC drivers it might need. */
export function withoutNicReason(devicesMissing: readonly string[]): string {
  return `the image's kernel has no module ${devicesMissing.join(', ')} (NIC drivers of the kit), and the machine's boot named no NIC to pick its driver by: an iPXE script fetched before nbdmux asked for \${netX/busid}, or an iPXE that gave none`;
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
