import type { EventLog } from '../events/event-log.js';
import { IntervalSummary } from '../events/interval-summary.js';
import type { Logger } from '../log.js';

/** A connection whose nbd-server could not start (or ended before serving), and why. */
export interface StartFailure {
  connection: number;
  client: string;
  reason: string;
}

/** Since when nbd-server fails, why it last did, and how many starts failed meanwhile. */
export interface Failing {
  since: string;
  reason: string;
  failedStarts: number;
}

const intervalMs = 10_000;
/** Reasons counted one by one; nbd-server fails for a handful of reasons, not per client. */
const maxReasons = 16;

/**
 * nbd-server failing to start: the reason health shows, and what the history and the log say
 * about it. A broken nbd-server fails for every client, so each failure is counted, not
 * recorded: the first of a reason is an `nbd-server.failed` event (`count` 1) plus its
 * connection's `connection.closed`, the rest of the interval one `nbd-server.failed` with their
 * `count` (their connections' rows are written, their events left out). Serving again ends it
 * with one `nbd-server.recovered` event.
 */
export class StartFailures {
  private current: Failing | null = null;
  private readonly summary: IntervalSummary<StartFailure>;

  constructor(
    private readonly events: EventLog,
    private readonly log: Logger,
  ) {
    this.summary = new IntervalSummary<StartFailure>({
      kindOf: ({ reason }) => reason,
      recordFirst: ({ connection, client, reason }) => {
        log.warn('nbd-server failed (further failures for this reason are counted, logged once per 10 s)', { connection, client, reason });
        events.record('nbd-server.failed', null, { connection, client, reason, count: 1 });
      },
      recordRepeats: ({ first, count, since, overflow }) => {
        const reason = overflow
          ? `nbd-server failed for more than ${maxReasons} reasons at once, counted together; the first of them: ${first.reason}`
          : first.reason;
        log.warn('nbd-server kept failing', { reason, count, since });
        events.record('nbd-server.failed', null, { reason, count, since });
      },
      intervalMs,
      maxKinds: maxReasons,
    });
  }

  /** Null while nbd-server starts fine. */
  get failing(): Failing | null {
    return this.current;
  }

  /** Counts a failed start; true when it was news (recorded with its connection's own events), false when only counted. */
  failed(failure: StartFailure): boolean {
    this.current = {
      since: this.current?.since ?? new Date().toISOString(),
      reason: failure.reason,
      failedStarts: (this.current?.failedStarts ?? 0) + 1,
    };
    return this.summary.add(failure);
  }

  /**
   * nbd-server served a client, or greeted a test start: failing is over, unless a start failed
   * after `failedStarts` were counted (the test began before it).
   */
  recovered(failedStarts = this.current?.failedStarts): void {
    const failing = this.current;
    if (failing === null || failing.failedStarts !== failedStarts) return;
    this.current = null;
    this.summary.flush();
    this.log.info('nbd-server serves again', { failingSince: failing.since, failedStarts: failing.failedStarts });
    this.events.record('nbd-server.recovered', null, {
      failingSince: failing.since,
      failedStarts: failing.failedStarts,
      lastReason: failing.reason,
    });
  }

  /** Records the counts of ended intervals; `flush` at shutdown records the rest. */
  sweep(): void {
    this.summary.sweep();
  }

  flush(): void {
    this.summary.flush();
  }
}
