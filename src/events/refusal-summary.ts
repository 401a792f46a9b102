import type { EventDetails } from './event-map.js';

/** A client the NBD port turned away, and why. */
export interface Refusal {
  client: string;
  port: number;
  reason: string;
  /** The export whose allow list refused the client; null when it was refused at accept. */
  exportName: string | null;
}

/**
 * What goes into the event history for refusals: the first of a kind at once (`port` set,
 * `count` 1), then, at the end of its interval, how many more came `since` then. The counts of
 * all `connection.refused` events add up to the number of refusals.
 */
export interface RefusalRecord {
  exportName: string | null;
  details: EventDetails['connection.refused'];
}

export interface RefusalSummaryOptions {
  record: (refusal: RefusalRecord) => void;
  intervalMs?: number;
  /** Kinds (address, export, reason) counted one by one; refusals of any further kind share one count. */
  maxKinds?: number;
  now?: () => number;
}

/** The kind that stands for every address beyond `maxKinds`: an attacker with many addresses still costs one row. */
export const otherClients = '*';

interface Interval {
  first: Refusal;
  startedAt: number;
  /** Refusals after the first, not recorded yet. */
  more: number;
}

/**
 * Counts refusals instead of recording each one: a client hammering the NBD port from a refused
 * address must not grow the database by a row per attempt. The dashboard still sees the first
 * refusal of each kind live.
 */
export class RefusalSummary {
  private readonly intervals = new Map<string, Interval>();
  private readonly intervalMs: number;
  private readonly maxKinds: number;
  private readonly now: () => number;

  constructor(private readonly options: RefusalSummaryOptions) {
    this.intervalMs = options.intervalMs ?? 10_000;
    this.maxKinds = options.maxKinds ?? 256;
    this.now = options.now ?? Date.now;
  }

  refuse(refusal: Refusal): void {
    const kind = JSON.stringify([refusal.client, refusal.exportName, refusal.reason]);
    const open = this.intervals.get(kind);
    if (open) {
      open.more++;
      return;
    }
    if (this.intervals.size >= this.maxKinds) {
      const others = this.intervals.get(otherClients);
      if (others) others.more++;
      else this.intervals.set(otherClients, { first: refusal, startedAt: this.now(), more: 1 });
      return;
    }
    this.intervals.set(kind, { first: refusal, startedAt: this.now(), more: 0 });
    const { client, port, reason, exportName } = refusal;
    this.options.record({ exportName, details: { client, port, reason, count: 1 } });
  }

  /** Records the count of every interval that has ended; the next refusal of that kind is news again. */
  sweep(): void {
    const now = this.now();
    for (const [kind, interval] of this.intervals) {
      if (now - interval.startedAt >= this.intervalMs) this.close(kind, interval);
    }
  }

  /** Records every count still open (at shutdown), so none is lost. */
  flush(): void {
    for (const [kind, interval] of this.intervals) this.close(kind, interval);
  }

  private close(kind: string, { first, startedAt, more }: Interval): void {
    this.intervals.delete(kind);
    if (more === 0) return;
    const since = new Date(startedAt).toISOString();
    if (kind === otherClients) {
      const reason = `more than ${this.maxKinds} kinds of refusal at once (addresses, exports, reasons), counted together`;
      this.options.record({ exportName: null, details: { client: otherClients, reason, count: more, since } });
    } else {
      this.options.record({ exportName: first.exportName, details: { client: first.client, reason: first.reason, count: more, since } });
    }
  }
}
