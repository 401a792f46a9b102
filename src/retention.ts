import { setTimeout as sleep } from 'node:timers/promises';
import { asc, desc, inArray, lt, lte } from 'drizzle-orm';
import type { Db } from './db/open.js';
import { connectionsTable, eventsTable } from './db/schema.js';
import { errorText, type Logger } from './log.js';

/** Rows deleted per step: about a millisecond of work, so requests wait at most that long for one. */
export const pruneBatchRows = 500;
const pruneIntervalMs = 60 * 60 * 1000;
/**
 * Milliseconds of rest per millisecond of deleting. Measured on a loaded 2-core machine (load
 * average 8-15), pruning 200,000 events: event-loop delay p99 18 ms resting 1x, 12 ms resting 3x.
 */
const restPerStepMs = 3;
const dayMs = 24 * 60 * 60 * 1000;

export interface RetentionOptions {
  retainDays: number;
  /** The newest events kept whatever their age: those a resuming subscriber may still be replayed. */
  keepNewestEvents: number;
  log: Logger;
}

/**
 * Deletes closed connections and events older than --retain-days: at start, then every hour.
 * A pass deletes a batch at a time, giving every waiting request its turn in between. Live
 * connections (no closed_at) are never deleted. Events go oldest id first, so what is left is
 * always every event after some id: `events.stream` tells a subscriber resuming from before it.
 */
export class Retention {
  private timer: NodeJS.Timeout | undefined;
  private pass: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly db: Db,
    private readonly options: RetentionOptions,
  ) {}

  start(): void {
    this.runPass();
    this.timer = setInterval(() => this.runPass(), pruneIntervalMs).unref();
  }

  /** Stops after the step under way; the database can then be closed. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.pass;
  }

  /** Deletes everything out of retention, a batch per turn of the event loop; resolves with the rows deleted. */
  async prune(now = Date.now()): Promise<{ events: number; connections: number }> {
    const cutoff = new Date(now - this.options.retainDays * dayMs).toISOString();
    const deleted = { events: 0, connections: 0 };
    const lastEventId = this.lastPrunableEventId(cutoff);
    for (;;) {
      const stepStarted = performance.now();
      const events = lastEventId === null ? 0 : this.deleteEvents(lastEventId);
      const connections = this.deleteConnections(cutoff);
      deleted.events += events;
      deleted.connections += connections;
      if (this.stopped || (events < pruneBatchRows && connections < pruneBatchRows)) return deleted;
      // Rests three times as long as the step took: a prune takes at most a quarter of a core.
      await sleep(Math.max(1, restPerStepMs * (performance.now() - stepStarted)));
    }
  }

  private runPass(): void {
    if (this.pass !== null) return;
    const started = Date.now();
    this.pass = this.prune(started)
      .then((deleted) => {
        if (deleted.events + deleted.connections > 0)
          this.options.log.info('pruned history older than --retain-days', { ...deleted, ms: Date.now() - started });
      })
      .catch((err: unknown) => this.options.log.warn('cannot prune history; it is tried again in an hour', { error: errorText(err) }))
      .finally(() => {
        this.pass = null;
      });
  }

  /**
   * The newest event id to delete: that of the newest event older than `cutoff` (one seek on
   * events_at), but below the newest `keepNewestEvents`. Null when there is nothing to delete.
   */
  private lastPrunableEventId(cutoff: string): number | null {
    const newestOld = this.db
      .select({ id: eventsTable.id })
      .from(eventsTable)
      .where(lt(eventsTable.at, cutoff))
      .orderBy(desc(eventsTable.at))
      .limit(1)
      .get();
    if (newestOld === undefined) return null;
    const oldestKept = this.db
      .select({ id: eventsTable.id })
      .from(eventsTable)
      .orderBy(desc(eventsTable.id))
      .limit(1)
      .offset(this.options.keepNewestEvents - 1)
      .get();
    if (oldestKept === undefined) return null;
    const last = Math.min(newestOld.id, oldestKept.id - 1);
    return last > 0 ? last : null;
  }

  private deleteEvents(lastId: number): number {
    const batch = this.db
      .select({ id: eventsTable.id })
      .from(eventsTable)
      .where(lte(eventsTable.id, lastId))
      .orderBy(asc(eventsTable.id))
      .limit(pruneBatchRows);
    return this.db.delete(eventsTable).where(inArray(eventsTable.id, batch)).run().changes;
  }

  /** `closed_at < cutoff` is a range of the connections_open index, which never holds a live connection's NULL. */
  private deleteConnections(cutoff: string): number {
    const batch = this.db
      .select({ id: connectionsTable.id })
      .from(connectionsTable)
      .where(lt(connectionsTable.closedAt, cutoff))
      .limit(pruneBatchRows);
    return this.db.delete(connectionsTable).where(inArray(connectionsTable.id, batch)).run().changes;
  }
}
