import { EventEmitter } from 'node:events';
import { asc, count, desc, gt, max, min } from 'drizzle-orm';
import type { DataDirSpace } from '../db/data-dir-space.js';
import type { Db } from '../db/open.js';
import { eventsTable, type EventOf, type EventRow } from '../db/schema.js';
import type { EventDetails, EventType } from '../model/event-map.js';

/**
 * Every event is written to the events table first, then announced to live listeners. While the
 * data dir is full, events are counted instead (never thrown at the NBD accept path); once space
 * is back, one `daemon.space-recovered` event says how many were not recorded.
 */
export class EventLog extends EventEmitter<{ event: [EventRow] }> {
  private notRecorded = 0;
  /** Live `events.stream` subscriptions, kept by that procedure for /metrics. */
  subscribers = 0;

  constructor(
    private readonly db: Db,
    private readonly space: DataDirSpace,
  ) {
    super();
    space.on('writable', ({ fullSince }) => {
      const missed = this.notRecorded;
      if (this.record('daemon.space-recovered', null, { dataDir: space.dataDir, fullSince, notRecorded: missed }))
        this.notRecorded -= missed;
    });
  }

  /** The row written, or null when the data dir is full and the event was only counted. */
  record<T extends EventType>(type: T, exportName: string | null, details: EventDetails[T]): EventOf<T> | null {
    // `.all()`, not `.get()`: a RETURNING statement left unfinished by `.get()` keeps SQLite from
    // checkpointing at commit, and the WAL then grows by two pages per event without end.
    const row = this.space.tryWrite(
      () => this.db.insert(eventsTable).values({ at: new Date().toISOString(), type, exportName, details }).returning().all()[0]!,
    );
    if (row === undefined) {
      this.notRecorded++;
      return null;
    }
    // `record` is the events table's only writer, so a row's details are always those of its type.
    const event = row as EventOf<T>;
    this.emit('event', event as EventRow);
    return event;
  }

  /** Up to `limit` events after `afterId`, oldest first: a page of what a reconnecting subscriber missed. */
  since(afterId: number, limit: number): EventRow[] {
    return this.db
      .select()
      .from(eventsTable)
      .where(gt(eventsTable.id, afterId))
      .orderBy(asc(eventsTable.id))
      .limit(limit)
      .all() as EventRow[];
  }

  /** How many events came after `afterId`, and the oldest and newest ids among them. */
  countSince(afterId: number): { count: number; oldestId: number | null; newestId: number | null } {
    const [result] = this.db
      .select({ count: count(), oldestId: min(eventsTable.id), newestId: max(eventsTable.id) })
      .from(eventsTable)
      .where(gt(eventsTable.id, afterId))
      .all();
    return { count: result?.count ?? 0, oldestId: result?.oldestId ?? null, newestId: result?.newestId ?? null };
  }

  /** The newest events first, optionally only those after an id the caller has already seen. */
  recent(limit: number, afterId?: number): EventRow[] {
    return this.db
      .select()
      .from(eventsTable)
      .where(afterId === undefined ? undefined : gt(eventsTable.id, afterId))
      .orderBy(desc(eventsTable.id))
      .limit(limit)
      .all() as EventRow[];
  }
}
