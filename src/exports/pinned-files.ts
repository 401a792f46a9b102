import fs from 'node:fs';
import { and, eq, isNull } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable, exportVersionsTable } from '../db/schema.js';
import type { EventLog } from '../events/event-log.js';
import type { Logger } from '../log.js';
import { fileIdentityOf } from '../rules/file-identity.js';
import type { PinnedImage } from './image-file.js';

/** How often the paths are compared with their files: one stat per export. */
const checkIntervalMs = 3000;

/** An export whose registered path no longer leads to its file, and what its clients get meanwhile. */
export interface FileChange {
  /** What the registered path leads to now. */
  pathLeadsTo: 'another file' | 'nothing';
  /**
   * `the registered file`: held open since registration, it is still what clients get (deleted,
   * it lives on until removal); `nothing`: the daemon started after the change and leaves the
   * export out of every config, as if it did not exist.
   */
  serving: 'the registered file' | 'nothing';
  seenAt: string;
}

/** Why a version's file is held open: it is its export's current version, or a machine's boot was written for it. */
type PinReason = 'current' | 'booted';

/** A version a machine's current boot was written for, as `holdBooted` opens it. */
export interface BootedFile {
  versionId: number;
  exportId: number;
  name: string;
  file: string;
  fileIdentity: string | null;
}

interface Pin {
  reasons: Set<PinReason>;
  exportId: number;
  name: string;
  file: string;
  fd: number;
  identity: string;
  /** The identity the path led to at the last check; null: to nothing. */
  seen: string | null;
  change: FileChange | null;
}

/**
 * The open descriptor of every served export's current version's image, judged at registration,
 * and of every version a machine's current boot was written for, by version id: serving processes
 * inherit these and open /proc/self/fd/N, so what a client gets is always that very file (same
 * device, inode and birth time), never whatever its path leads to since. Cost: one descriptor
 * per export and per older version still booted (Node raises its own soft limit to the hard
 * one) and one stat per descriptor per check.
 */
export class PinnedFiles {
  private readonly pins = new Map<number, Pin>();
  /** Versions left unserved at start: their path led elsewhere. */
  private readonly unserved = new Map<number, FileChange>();
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly events: EventLog,
    private readonly log: Logger,
  ) {}

  /**
   * At start: opens every served export's current version's stored path again and serves it
   * only if that is still the pinned file. Versions registered before pinning existed are pinned
   * now, if their real path still leads to a servable file without a symlink.
   */
  static reopen(db: Db, events: EventLog, log: Logger): PinnedFiles {
    const pins = new PinnedFiles(events, log);
    const rows = db
      .select({
        exportId: exportsTable.id,
        name: exportsTable.name,
        versionId: exportVersionsTable.id,
        file: exportVersionsTable.file,
        fileIdentity: exportVersionsTable.fileIdentity,
      })
      .from(exportsTable)
      .innerJoin(exportVersionsTable, eq(exportVersionsTable.id, exportsTable.currentVersionId))
      .where(and(isNull(exportsTable.removedAt), eq(exportVersionsTable.state, 'ready')))
      .all();
    for (const row of rows) {
      if (row.file === null) continue; // a ready version always has its file
      const opened = openPinned(row.file, row.fileIdentity);
      if (typeof opened === 'string') {
        pins.leaveUnserved(row.versionId, row.exportId, row.name, row.file, opened);
        continue;
      }
      if (row.fileIdentity === null)
        db.update(exportVersionsTable).set({ fileIdentity: opened.identity }).where(eq(exportVersionsTable.id, row.versionId)).run();
      pins.pins.set(row.versionId, {
        reasons: new Set(['current']),
        exportId: row.exportId,
        name: row.name,
        file: row.file,
        fd: opened.fd,
        identity: opened.identity,
        seen: opened.identity,
        change: null,
      });
    }
    return pins;
  }

  /**
   * Takes over the descriptor of a version that becomes current. A version held already (a
   * machine booted it) keeps the descriptor it has: pass that one, `fdOf`, as `image.fd`.
   */
  hold(versionId: number, exportId: number, name: string, image: Pick<PinnedImage, 'realPath' | 'fd' | 'identity'>): void {
    const held = this.pins.get(versionId);
    if (held) {
      held.reasons.add('current');
      return;
    }
    this.pins.set(versionId, {
      reasons: new Set(['current']),
      exportId,
      name,
      file: image.realPath,
      fd: image.fd,
      identity: image.identity,
      seen: image.identity,
      change: null,
    });
  }

  /**
   * A version is no longer current (or its export was removed). Its descriptor closes unless a
   * machine's boot still holds it. Safe at once: the configs no longer name it, and every serving
   * process started before holds its own copy, inherited at spawn.
   */
  release(versionId: number): void {
    this.drop(versionId, 'current');
    this.unserved.delete(versionId);
  }

  /**
   * Makes `booted` the versions machines' boots hold, opening those not held yet (and judging
   * them again, as at start) and closing those no longer held for any reason. Returns each
   * version's descriptor, or null for one whose path no longer leads to its file.
   */
  holdBooted(booted: readonly BootedFile[]): Map<number, number | null> {
    const wanted = new Set(booted.map((file) => file.versionId));
    for (const [versionId, pin] of this.pins) if (pin.reasons.has('booted') && !wanted.has(versionId)) this.drop(versionId, 'booted');
    const fds = new Map<number, number | null>();
    for (const file of booted) {
      let pin = this.pins.get(file.versionId);
      if (pin === undefined) {
        const opened = openPinned(file.file, file.fileIdentity);
        if (typeof opened === 'string') {
          fds.set(file.versionId, null);
          continue;
        }
        const { exportId, name } = file;
        pin = {
          reasons: new Set(),
          exportId,
          name,
          file: file.file,
          fd: opened.fd,
          identity: opened.identity,
          seen: opened.identity,
          change: null,
        };
        this.pins.set(file.versionId, pin);
      }
      pin.reasons.add('booted');
      fds.set(file.versionId, pin.fd);
    }
    return fds;
  }

  /** Versions held for machines' boots: their stored files are still needed. */
  bootedVersionIds(): number[] {
    return [...this.pins].flatMap(([versionId, pin]) => (pin.reasons.has('booted') ? [versionId] : []));
  }

  private drop(versionId: number, reason: PinReason): void {
    const pin = this.pins.get(versionId);
    if (!pin) return;
    pin.reasons.delete(reason);
    if (pin.reasons.size > 0) return;
    fs.closeSync(pin.fd);
    this.pins.delete(versionId);
  }

  /** The descriptor to serve the version from; undefined when it is not served. */
  fdOf(versionId: number): number | undefined {
    return this.pins.get(versionId)?.fd;
  }

  changeOf(versionId: number): FileChange | null {
    return this.unserved.get(versionId) ?? this.pins.get(versionId)?.change ?? null;
  }

  startChecking(): void {
    this.timer = setInterval(() => this.check(), checkIntervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Notes, once per change, where each served export's path leads. The served file stays the pinned one. */
  check(): void {
    for (const pin of this.pins.values()) {
      const seen = identityAt(pin.file);
      if (seen === pin.seen) continue;
      pin.seen = seen;
      pin.change =
        seen === pin.identity
          ? null
          : { pathLeadsTo: seen === null ? 'nothing' : 'another file', serving: 'the registered file', seenAt: new Date().toISOString() };
      this.record(pin.exportId, pin.name, pin.file, pin.change?.pathLeadsTo ?? 'the registered file', 'the registered file');
    }
  }

  private leaveUnserved(versionId: number, exportId: number, name: string, file: string, pathLeadsTo: FileChange['pathLeadsTo']): void {
    this.unserved.set(versionId, { pathLeadsTo, serving: 'nothing', seenAt: new Date().toISOString() });
    this.record(exportId, name, file, pathLeadsTo, 'nothing');
  }

  private record(
    exportId: number,
    name: string,
    file: string,
    pathLeadsTo: FileChange['pathLeadsTo'] | 'the registered file',
    serving: FileChange['serving'],
  ): void {
    this.log.warn('export file changed', { export: name, file, pathLeadsTo, serving });
    this.events.record('export.file-changed', name, { id: exportId, file, pathLeadsTo, serving });
  }
}

/**
 * Opens `file` again for a version judged before, and returns its descriptor only if it is still
 * that file (`identity`; null: judged before pinning existed, then only a real path to a regular
 * file or block device is trusted); otherwise what the path leads to now.
 */
export function openPinned(file: string, identity: string | null): { fd: number; identity: string } | FileChange['pathLeadsTo'] {
  let fd: number;
  try {
    // Following any symlink: the identity check below decides, whatever the path went through.
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    return 'nothing';
  }
  const stats = fs.fstatSync(fd, { bigint: true });
  const found = fileIdentityOf(stats);
  const unpinnedButIntact =
    identity === null && fs.readlinkSync(`/proc/self/fd/${fd}`) === file && (stats.isFile() || stats.isBlockDevice());
  if (found !== identity && !unpinnedButIntact) {
    fs.closeSync(fd);
    return 'another file';
  }
  return { fd, identity: found };
}

/** The identity of what `file` leads to now, through any symlink; null when it leads nowhere. */
export function identityAt(file: string): string | null {
  try {
    return fileIdentityOf(fs.statSync(file, { bigint: true }));
  } catch {
    return null;
  }
}
