import fs from 'node:fs';
import { eq, isNull } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable } from '../db/schema.js';
import type { EventLog } from '../events/event-log.js';
import type { Logger } from '../log.js';
import { fileIdentityOf, type PinnedImage } from './image-file.js';

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

interface Pin {
  name: string;
  file: string;
  fd: number;
  identity: string;
  /** The identity the path led to at the last check; null: to nothing. */
  seen: string | null;
  change: FileChange | null;
}

/**
 * The open descriptor of every served export's image, judged at registration: serving processes
 * inherit these and open /proc/self/fd/N, so what a client gets is always that very file (same
 * device, inode and birth time), never whatever its path leads to since. Cost: one descriptor
 * per export (Node raises its own soft limit to the hard one) and one stat per export per check.
 */
export class PinnedFiles {
  private readonly pins = new Map<number, Pin>();
  /** Exports left unserved at start: their path led elsewhere. */
  private readonly unserved = new Map<number, FileChange>();
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly events: EventLog,
    private readonly log: Logger,
  ) {}

  /**
   * At start: opens every export's stored path again and serves it only if that is still the
   * pinned file. Exports registered before pinning existed are pinned now, if their real path
   * still leads to a servable file without a symlink.
   */
  static reopen(db: Db, events: EventLog, log: Logger): PinnedFiles {
    const pins = new PinnedFiles(events, log);
    const rows = db.select().from(exportsTable).where(isNull(exportsTable.removedAt)).all();
    for (const row of rows) {
      let fd: number;
      try {
        // Following any symlink: the identity check below decides, whatever the path went through.
        fd = fs.openSync(row.file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      } catch {
        pins.leaveUnserved(row.id, row.name, row.file, 'nothing');
        continue;
      }
      const stats = fs.fstatSync(fd, { bigint: true });
      const identity = fileIdentityOf(stats);
      const unpinnedButIntact = row.fileIdentity === null && fs.readlinkSync(`/proc/self/fd/${fd}`) === row.file && (stats.isFile() || stats.isBlockDevice());
      if (identity !== row.fileIdentity && !unpinnedButIntact) {
        fs.closeSync(fd);
        pins.leaveUnserved(row.id, row.name, row.file, 'another file');
        continue;
      }
      if (row.fileIdentity === null) db.update(exportsTable).set({ fileIdentity: identity }).where(eq(exportsTable.id, row.id)).run();
      pins.pins.set(row.id, { name: row.name, file: row.file, fd, identity, seen: identity, change: null });
    }
    return pins;
  }

  /** Takes over the descriptor of a newly registered export. */
  hold(exportId: number, name: string, image: PinnedImage): void {
    this.pins.set(exportId, { name, file: image.realPath, fd: image.fd, identity: image.identity, seen: image.identity, change: null });
  }

  /**
   * Closes a removed export's descriptor. Safe at once: the configs no longer name it, and every
   * serving process started before holds its own copy, inherited at spawn.
   */
  release(exportId: number): void {
    const pin = this.pins.get(exportId);
    if (pin) fs.closeSync(pin.fd);
    this.pins.delete(exportId);
    this.unserved.delete(exportId);
  }

  /** The descriptor to serve the export from; undefined when it is not served. */
  fdOf(exportId: number): number | undefined {
    return this.pins.get(exportId)?.fd;
  }

  changeOf(exportId: number): FileChange | null {
    return this.unserved.get(exportId) ?? this.pins.get(exportId)?.change ?? null;
  }

  startChecking(): void {
    this.timer = setInterval(() => this.check(), checkIntervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Notes, once per change, where each served export's path leads. The served file stays the pinned one. */
  check(): void {
    for (const [exportId, pin] of this.pins) {
      const seen = identityAt(pin.file);
      if (seen === pin.seen) continue;
      pin.seen = seen;
      pin.change = seen === pin.identity ? null : { pathLeadsTo: seen === null ? 'nothing' : 'another file', serving: 'the registered file', seenAt: new Date().toISOString() };
      this.record(exportId, pin.name, pin.file, pin.change?.pathLeadsTo ?? 'the registered file', 'the registered file');
    }
  }

  private leaveUnserved(exportId: number, name: string, file: string, pathLeadsTo: FileChange['pathLeadsTo']): void {
    this.unserved.set(exportId, { pathLeadsTo, serving: 'nothing', seenAt: new Date().toISOString() });
    this.record(exportId, name, file, pathLeadsTo, 'nothing');
  }

  private record(exportId: number, name: string, file: string, pathLeadsTo: FileChange['pathLeadsTo'] | 'the registered file', serving: FileChange['serving']): void {
    this.log.warn('export file changed', { export: name, file, pathLeadsTo, serving });
    this.events.record('export.file-changed', name, { id: exportId, file, pathLeadsTo, serving });
  }
}

/** The identity of what `file` leads to now, through any symlink; null when it leads nowhere. */
function identityAt(file: string): string | null {
  try {
    return fileIdentityOf(fs.statSync(file, { bigint: true }));
  } catch {
    return null;
  }
}
