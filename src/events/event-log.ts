import { EventEmitter } from 'node:events';
import type { Db } from '../db/open.js';
import { eventsTable, type EventRow } from '../db/schema.js';

export type EventType =
  | 'daemon.started'
  | 'daemon.stopped'
  | 'export.created'
  | 'export.removed'
  | 'connection.opened'
  | 'connection.negotiated'
  | 'connection.closed'
  | 'connection.refused'
  | 'connection.adopted'
  | 'nbd-server.failed';

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
}
