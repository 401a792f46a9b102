import fs from 'node:fs';
import path from 'node:path';
import { and, eq, isNull } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable, exportVersionsTable } from '../db/schema.js';
import { fileIdentityOf } from '../rules/file-identity.js';
import { errorText, type Logger } from '../log.js';
import { cleanText } from '../untrusted-text.js';
import { fileEtag, unknownLayout, type BootArtifacts, type BootExport, type BootFile, type BootInfo } from './artifacts.js';
import { ChildQueue } from '../bounded-child.js';
import { BootFilesCache, readKit, type BootFiles, type Kit } from '../initrd/index.js';
import { bootSummaryOf, inspectBootImage, type BootInspection, type BootSummary } from '../inspect/index.js';
import { bootInspectionSchema } from '../inspect/result.js';
import { nicText, type NicId } from '../inspect/nic-drivers.js';
import { filesystemTypes, linuxFilesystems } from '../inspect/filesystems.js';
import { layoutModules, rootFilesystemModule } from '../inspect/inspect-image.js';
import { moduleKey } from '../inspect/modules-dep.js';

/** Inspections at once: each is a node child of about 100 ms and a few debugfs runs. */
const parallelInspections = 2;
/**
 * An image inspected before and changed since (a read-write export being written) is inspected
 * again once it has stayed unchanged this long, or at the latest `maxSettleMs` after the change
 * was first seen: a few inspections a minute while it is written, not one per look.
 */
const settleMs = 2000;
const maxSettleMs = 30_000;

/** The descriptors of the versions' images, held open by the export registry (exports/pinned-files.ts). */
export interface HeldImages {
  fdOf(versionId: number): number | undefined;
}

/** An export's current version's pinned image as it is now. */
interface ImageNow {
  versionId: number;
  fd: number;
  /** Undefined for a block device, whose stat says 0: the size judged when the version was registered stands. */
  size: number | undefined;
  /** Pinned identity, size, mtime and the kit: what an inspection's answer is valid for. */
  identity: string;
}

/**
 * What each export boots, from what is inside its current version's image: the image's own
 * kernel with an initramfs carrying its own modules, or the kit's kernel and initrd with the reason.
 *
 * The inspection belongs to the image, so to a version: each is inspected (out of process, at most
 * `parallelInspections` at once) when it becomes current, at start when it was never inspected as
 * it is, and once a look finds its size, mtime or the kit changed and it then settles (see
 * `settleMs`); the answer is stored in the version's row (`boot`, `boot_identity`), so a rollback
 * to an image inspected before needs no new look. A version inspected before boots as it was last
 * inspected until the new answer is in; its boot files are built once per inspection. Nothing
 * here waits for an inspection but a machine asking for a file of a version never inspected.
 */
export class ImageBootArtifacts implements BootArtifacts {
  /** By version id; `exportId` lets a removal drop them all. */
  private readonly inspected = new Map<number, { exportId: number; identity: string; inspection: BootInspection }>();
  /** One inspection queued or running per version: a look at a version never inspected says "inspecting" meanwhile. */
  private readonly inspecting = new Map<number, Promise<void>>();
  /** Versions changed since their inspection, waiting to settle before the next one: `identity` as last seen. */
  private readonly settling = new Map<number, { exportId: number; identity: string; firstSeen: number; timer: NodeJS.Timeout }>();
  /** An image whose own files failed to build boots the kit's: why, for the inspection (its identity) they were built from. */
  private readonly buildFailures = new Map<number, { identity: string; reason: string }>();
  private readonly queue = new ChildQueue(parallelInspections);

  private constructor(
    private readonly db: Db,
    private readonly pins: HeldImages,
    private readonly kit: Kit,
    private readonly cache: BootFilesCache,
    private readonly log: Logger,
  ) {}

  /** Reads the kit (`--ramboot-kit`), opens the cache under the data dir, and inspects every current version not inspected as it is. */
  static async open(options: { db: Db; pins: HeldImages; kitDir: string; dataDir: string; log: Logger }): Promise<ImageBootArtifacts> {
    const { db, pins, kitDir, dataDir, log } = options;
    for (const name of ['vmlinuz', 'initrd.img', 'kit.env']) {
      if (!fs.statSync(path.join(kitDir, name), { throwIfNoEntry: false })?.isFile()) {
        throw new Error(`--ramboot-kit ${kitDir} holds no ${name}: give a directory ramboot/cached-build (or ramboot/build-kit) wrote`);
      }
    }
    const kit = await readKit(kitDir).catch((err: Error) => {
      throw new Error(`--ramboot-kit ${kitDir} cannot be read (${err.message}): rebuild it with ramboot/cached-build`);
    });
    const cache = await BootFilesCache.open(path.join(dataDir, 'boot'), kit, log);
    const artifacts = new ImageBootArtifacts(db, pins, kit, cache, log);
    const current = db
      .select({ exportId: exportsTable.id, versionId: exportsTable.currentVersionId })
      .from(exportsTable)
      .where(isNull(exportsTable.removedAt))
      .all();
    for (const { exportId, versionId } of current) if (versionId !== null) artifacts.versionCurrent(exportId, versionId);
    return artifacts;
  }

  bootInfo(exp: BootExport): BootInfo {
    const image = this.imageNow(exp.id);
    if (!image)
      return {
        ...unknownLayout,
        ready: false,
        os: null,
        kernel: null,
        reason: 'it serves no image now (see state and fileChange in GET /exports)',
      };
    const known = this.inspected.get(image.versionId);
    if (!known) return { ...unknownLayout, ready: false, os: null, kernel: null, reason: 'inspecting' };
    const summary = bootSummaryOf(known.inspection);
    const failure = this.buildFailures.get(image.versionId);
    const buildFailed = failure?.identity === known.identity ? failure.reason : null;
    if (summary.ready && buildFailed === null) {
      const missing = known.inspection.devicesMissing;
      if (missing.length === 0) return summary;
      // Per machine: the image's own kernel where it drives the machine's NIC, the kit's elsewhere.
      return {
        ...summary,
        reason: `boots its own kernel ${summary.kernel} on a machine whose NIC it drives (its script names the NIC by iPXE's \${netX/busid}); the ramboot kit's kernel ${this.kit.kernelVersion} boots the others and any whose boot names no NIC, since ${summary.kernel} has no module ${missing.join(', ')}`,
      };
    }
    const why = buildFailed ?? summary.reason ?? 'the image has no usable kernel of its own';
    const missing = this.kitCannotMount(summary);
    if (missing)
      return {
        ...summary,
        ready: false,
        kernel: null,
        reason: `cannot boot: the image's own kernel cannot (${why}), and the ramboot kit's kernel ${this.kit.kernelVersion} has no ${missing} module to mount its ${summary.fstype} root. Rebuild the kit with RAMBOOT_EXTRA_MODULES="${missing}" (ramboot/build-kit) and restart nbdmux-server with it, or give the image a kernel whose modules include ${missing}`,
      };
    // The kit's kernel still boots the image's root filesystem: partition and fstype stay the image's.
    return {
      ...summary,
      ready: true,
      kernel: this.kit.kernelVersion,
      reason: `boots the ramboot kit's kernel ${this.kit.kernelVersion}: ${why}`,
    };
  }

  /** The module the kit lacks to mount the root (its filesystem's, dm_mod for an LV); null when it has them, or the root's filesystem is not known. */
  private kitCannotMount(summary: BootSummary): string | null {
    const known = filesystemTypes.find((type) => type === summary.fstype);
    if (!known || !linuxFilesystems.has(known)) return null;
    const needed = [rootFilesystemModule(known), ...layoutModules(summary)].filter((module) => module !== null);
    return needed.find((module) => !this.kit.loadOrder.some(({ name }) => moduleKey(name) === moduleKey(module))) ?? null;
  }

  async kernelFor(exp: BootExport, nic: NicId | null): Promise<BootFile> {
    const files = await this.filesOf(exp, nic);
    return 'kernel' in files ? fileAt(files.kernel, this.detailOf(files, nic)) : files;
  }

  async initrdFor(exp: BootExport, nic: NicId | null): Promise<BootFile> {
    const files = await this.filesOf(exp, nic);
    return 'initrd' in files ? fileAt(files.initrd, this.detailOf(files, nic)) : files;
  }

  /** What a machine's boot shows of the kernel it gets: the image's own, or the kit's and exactly why. */
  private detailOf(files: BootFiles, nic: NicId | null): string {
    const onNic = nic === null ? '' : ` (NIC ${nicText(nic)})`;
    return files.own
      ? `boots the image's own kernel${onNic}`
      : `boots the ramboot kit's kernel ${this.kit.kernelVersion}${onNic}: ${files.reason ?? 'the image has no usable kernel of its own'}`;
  }

  versionCurrent(exportId: number, versionId: number): void {
    if (!this.inspected.has(versionId)) {
      // Inspected in an earlier run, or before a rollback made it current again: no new look unless its file changed.
      const stored = this.db
        .select({ inspection: exportVersionsTable.bootInspection, identity: exportVersionsTable.bootIdentity })
        .from(exportVersionsTable)
        .where(eq(exportVersionsTable.id, versionId))
        .get();
      // Parsed: a row stored by an older nbdmux lacks the fields added since (their defaults fill them).
      const inspection = bootInspectionSchema.safeParse(stored?.inspection);
      if (stored && inspection.success && stored.identity !== null)
        this.inspected.set(versionId, { exportId, identity: stored.identity, inspection: inspection.data });
    }
    this.imageNow(exportId);
  }

  removed(exportId: number): void {
    for (const [versionId, known] of this.inspected) {
      if (known.exportId !== exportId) continue;
      this.inspected.delete(versionId);
      this.buildFailures.delete(versionId);
    }
    for (const [versionId, pending] of this.settling) {
      if (pending.exportId !== exportId) continue;
      clearTimeout(pending.timer);
      this.settling.delete(versionId);
    }
    this.cache
      .forget(exportId)
      .catch((err: Error) => this.log.warn('cannot remove the boot files of a removed export', { exportId, error: errorText(err) }));
  }

  /**
   * Both files of one `filesFor` answer, so kernel and initrd match: the image's own once
   * built, else the kit's. Waits for the first inspection of a version under way (bounded by its
   * time limit); a version inspected before is built from its last inspection.
   */
  private async filesOf(exp: BootExport, nic: NicId | null): Promise<BootFiles | Extract<BootFile, { ok: false }>> {
    let image = this.imageNow(exp.id);
    if (image && !this.inspected.has(image.versionId)) {
      await this.inspecting.get(image.versionId);
      image = this.imageNow(exp.id);
    }
    if (!image) return { ok: false, status: 404, reason: 'it serves no image now (see state and fileChange in GET /exports)' };
    const known = this.inspected.get(image.versionId);
    if (!known) return { ok: false, status: 503, reason: 'its image is not inspected yet; try again' };
    const source = { fd: image.fd, size: image.size ?? this.registeredSize(image.versionId) };
    const files = await this.cache.filesFor({
      exportId: exp.id,
      image: source,
      imageIdentity: known.identity,
      inspection: known.inspection,
      nic,
    });
    if (files.own) this.buildFailures.delete(image.versionId);
    // A fallback for one NIC (or for a boot naming none) says nothing of the image's other machines.
    else if (known.inspection.ready && !files.forNic)
      this.buildFailures.set(image.versionId, {
        identity: known.identity,
        reason: cleanText(files.reason ?? 'its boot files could not be built'),
      });
    return files;
  }

  /**
   * The export's current version's pinned image now, starting an inspection when none is known for
   * it as it is (at once for a version never inspected, else once it settles); undefined when the
   * export serves no image (removed, importing its first version, or its file not held).
   */
  private imageNow(exportId: number): ImageNow | undefined {
    const versionId = this.currentVersionOf(exportId);
    const fd = versionId === null ? undefined : this.pins.fdOf(versionId);
    if (versionId === null || fd === undefined) return undefined;
    const stat = fs.fstatSync(fd, { bigint: true });
    const image = { versionId, fd, size: stat.isBlockDevice() ? undefined : Number(stat.size), identity: this.identityOf(stat) };
    const known = this.inspected.get(versionId);
    if (known?.identity === image.identity || this.inspecting.has(versionId)) return image;
    if (!known) this.startInspection(exportId, versionId);
    else this.inspectOnceSettled(exportId, versionId, image.identity);
    return image;
  }

  private currentVersionOf(exportId: number): number | null {
    return (
      this.db
        .select({ id: exportsTable.currentVersionId })
        .from(exportsTable)
        .where(and(eq(exportsTable.id, exportId), isNull(exportsTable.removedAt)))
        .get()?.id ?? null
    );
  }

  /**
   * Inspects a changed version again once two stats `settleMs` apart find its image the same
   * (the first is the look's, `identity`), or `maxSettleMs` after the change was first seen.
   */
  private inspectOnceSettled(exportId: number, versionId: number, identity: string): void {
    // The timer's own stats tell whether it settled: a look meanwhile changes nothing.
    if (this.settling.has(versionId)) return;
    const check = () => {
      const fd = this.pins.fdOf(versionId);
      const now =
        fd === undefined || this.currentVersionOf(exportId) !== versionId ? null : this.identityOf(fs.fstatSync(fd, { bigint: true }));
      const waited = Date.now() - settle.firstSeen;
      if (now !== null && now !== settle.identity && waited < maxSettleMs) {
        settle.identity = now;
        settle.timer = setTimeout(check, Math.min(settleMs, maxSettleMs - waited)).unref();
        return;
      }
      this.settling.delete(versionId);
      if (now !== null && now !== this.inspected.get(versionId)?.identity && !this.inspecting.has(versionId))
        this.startInspection(exportId, versionId);
    };
    const settle = { exportId, identity, firstSeen: Date.now(), timer: setTimeout(check, settleMs).unref() };
    this.settling.set(versionId, settle);
  }

  /** A block device's size as judged when its version was registered (its stat says 0). */
  private registeredSize(versionId: number): number | undefined {
    return (
      this.db.select({ size: exportVersionsTable.size }).from(exportVersionsTable).where(eq(exportVersionsTable.id, versionId)).get()
        ?.size ?? undefined
    );
  }

  /** Rewritten in place (size, mtime), replaced (pinned identity) or another kit: inspect again. */
  private identityOf(stat: fs.BigIntStats): string {
    // `nic`: inspections before the kit's NIC drivers became per machine asked for all of them; each is redone once.
    return `${fileIdentityOf(stat)}:${stat.size}:${stat.mtimeNs}:${this.kit.id}:nic`;
  }

  private startInspection(exportId: number, versionId: number): void {
    const job = this.queue
      .run(async () => {
        const fd = this.pins.fdOf(versionId);
        // No longer current, or its export removed, while it waited.
        if (fd === undefined) return;
        const before = fs.fstatSync(fd, { bigint: true });
        const identity = this.identityOf(before);
        const size = before.isBlockDevice() ? this.registeredSize(versionId) : Number(before.size);
        const started = Date.now();
        const devices = new Set(this.kit.deviceModules);
        const found = await inspectBootImage({
          image: { fd, size },
          requiredModules: this.kit.rootModules.filter((name) => !devices.has(name)),
          deviceModules: this.kit.deviceModules,
        });
        // The image's words (its os-release, its file names in a reason) reach terminals and the dashboard: stored with their control characters written out.
        const inspection = { ...found, os: found.os && cleanText(found.os), reason: found.reason && cleanText(found.reason) };
        if (this.pins.fdOf(versionId) !== fd) return;
        // Stored under the identity seen before it began: a change meanwhile is noticed at the next look.
        this.db
          .update(exportVersionsTable)
          .set({ bootInspection: inspection, bootIdentity: identity })
          .where(eq(exportVersionsTable.id, versionId))
          .run();
        this.inspected.set(versionId, { exportId, identity, inspection });
        this.log.info('image inspected for booting', {
          exportId,
          versionId,
          ready: inspection.ready,
          kernel: inspection.kernel,
          reason: inspection.reason,
          ms: Date.now() - started,
        });
      })
      .catch((err: Error) =>
        this.log.warn('cannot inspect an image for booting: it cannot boot until a later look inspects it again', {
          exportId,
          versionId,
          error: errorText(err),
        }),
      )
      .finally(() => this.inspecting.delete(versionId));
    this.inspecting.set(versionId, job);
  }
}

/** A built or kit file, its size and ETag as they are now. */
async function fileAt(file: string, detail: string | null): Promise<BootFile> {
  try {
    const stat = await fs.promises.stat(file);
    return { ok: true, path: file, size: stat.size, etag: fileEtag(stat), detail };
  } catch (err) {
    return {
      ok: false,
      status: 503,
      reason: `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)}); try again, or rebuild the kit with ramboot/cached-build`,
    };
  }
}
