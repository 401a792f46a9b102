import type { EventDetails } from '../model/event-map.js';
import { IntervalSummary } from './interval-summary.js';

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

/**
 * Counts refusals instead of recording each one: a client hammering the NBD port from a refused
 * address must not grow the database by a row per attempt. The dashboard still sees the first
 * refusal of each kind live.
 */
export class RefusalSummary {
  private readonly summary: IntervalSummary<Refusal>;

  constructor({ record, intervalMs = 10_000, maxKinds = 256, now }: RefusalSummaryOptions) {
    this.summary = new IntervalSummary<Refusal>({
      kindOf: ({ client, exportName, reason }) => JSON.stringify([client, exportName, reason]),
      recordFirst: ({ client, port, reason, exportName }) => record({ exportName, details: { client, port, reason, count: 1 } }),
      recordRepeats: ({ first, count, since, overflow }) => {
        if (!overflow)
          return record({ exportName: first.exportName, details: { client: first.client, reason: first.reason, count, since } });
        const reason = `more than ${maxKinds} kinds of refusal at once (addresses, exports, reasons), counted together`;
        record({ exportName: null, details: { client: otherClients, reason, count, since } });
      },
      intervalMs,
      maxKinds,
      ...(now && { now }),
    });
  }

  refuse(refusal: Refusal): void {
    this.summary.add(refusal);
  }

  /** Records the count of every interval that has ended; the next refusal of that kind is news again. */
  sweep(): void {
    this.summary.sweep();
  }

  /** Records every count still open (at shutdown), so none is lost. */
  flush(): void {
    this.summary.flush();
  }
}
