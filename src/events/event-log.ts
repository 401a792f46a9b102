import { EventEmitter } from 'node:events';
import { asc, count, desc, gt, max } from 'drizzle-orm';
import type { DataDirSpace } from '../db/data-dir-space.js';
import type { Db } from '../db/open.js';
import { eventsTable, type EventRow } from '../db/schema.js';

export type EventType =
  | 'daemon.started'
  | 'daemon.stopped'
  | 'daemon.space-recovered'
  | 'export.created'
  | 'export.removed'
  | 'export.file-changed'
  | 'connection.opened'
  | 'connection.negotiated'
  | 'connection.closed'
  | 'connection.refused'
  | 'connection.adopted'
  | 'nbd-server.failed'
  | 'auth.login-succeeded'
  | 'auth.login-failed'
  | 'auth.logout'
  | 'boot.script'
  | 'boot.kernel'
  | 'boot.initrd';

/**
 * Every event is written to the events table first, then announced to live listeners. While the
 * data dir is full, events are counted instead (never thrown at the NBD accept path); once space
 * is back, one `daemon.space-recovered` event says how many were not recorded.
 */
export class EventLog extends EventEmitter<{ event: [EventRow] }> {
  private notRecorded = 0;

  constructor(
    private readonly db: Db,
    private readonly space: DataDirSpace,
  ) {
    super();
    space.on('writable', ({ fullSince }) => {
      const missed = this.notRecorded;
      if (this.record('daemon.space-recovered', null, { dataDir: space.dataDir, fullSince, notRecorded: missed })) this.notRecorded -= missed;
    });
  }

  /** The row written, or null when the data dir is full and the event was only counted. */
  record(type: EventType, exportName: string | null, details: Record<string, unknown> = {}): EventRow | null {
    // `.all()`, not `.get()`: a RETURNING statement left unfinished by `.get()` keeps SQLite from
    // checkpointing at commit, and the WAL then grows by two pages per event without end.
    const row = this.space.tryWrite(() => this.db.insert(eventsTable).values({ at: new Date().toISOString(), type, exportName, details }).returning().all()[0]!);
    if (row === undefined) {
      this.notRecorded++;
      return null;
    }
    this.emit('event', row);
    return row;
  }

  /** Up to `limit` events after `afterId`, oldest first: a page of what a reconnecting subscriber missed. */
  since(afterId: number, limit: number): EventRow[] {
    return this.db.select().from(eventsTable).where(gt(eventsTable.id, afterId)).orderBy(asc(eventsTable.id)).limit(limit).all();
  }

  /** How many events came after `afterId`, and the newest id among them. */
  countSince(afterId: number): { count: number; newestId: number | null } {
    const [result] = this.db.select({ count: count(), newestId: max(eventsTable.id) }).from(eventsTable).where(gt(eventsTable.id, afterId)).all();
    return { count: result?.count ?? 0, newestId: result?.newestId ?? null };
  }

  /** The newest events first, optionally only those after an id the caller has already seen. */
  recent(limit: number, afterId?: number): EventRow[] {
    return this.db
      .select()
      .from(eventsTable)
      .where(afterId === undefined ? undefined : gt(eventsTable.id, afterId))
      .orderBy(desc(eventsTable.id))
      .limit(limit)
      .all();
  }
}
