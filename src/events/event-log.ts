import { EventEmitter } from 'node:events';
import { asc, desc, gt } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { eventsTable, type EventRow } from '../db/schema.js';

export type EventType =
  | 'daemon.started'
  | 'daemon.stopped'
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
  | 'auth.logout';

/** Every event is written to the events table first, then announced to live listeners. */
export class EventLog extends EventEmitter<{ event: [EventRow] }> {
  constructor(private readonly db: Db) {
    super();
  }

  record(type: EventType, exportName: string | null, details: Record<string, unknown> = {}): EventRow {
    const row = this.db
      .insert(eventsTable)
      .values({ at: new Date().toISOString(), type, exportName, details })
      .returning()
      .get();
    this.emit('event', row);
    return row;
  }

  /** Every event after `afterId`, oldest first: what a reconnecting subscriber missed. */
  since(afterId: number): EventRow[] {
    return this.db.select().from(eventsTable).where(gt(eventsTable.id, afterId)).orderBy(asc(eventsTable.id)).all();
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
