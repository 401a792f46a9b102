import type { EventLog } from './event-log.js';
import type { EventDetails } from '../model/event-map.js';
import { IntervalSummary } from './interval-summary.js';
// The address that stands for every client beyond `maxKinds`, as in connection.refused.
import { otherClients } from './refusal-summary.js';

/** Events any client can cause as often as it likes, without logging in: each carries `count` and `since` when it sums up repeats. */
export type SummarisedType = 'boot.script' | 'boot.kernel' | 'boot.initrd' | 'machine.discovered';

interface Occurrence {
  type: SummarisedType;
  exportName: string | null;
  details: EventDetails[SummarisedType];
}

/**
 * Records what the open boot routes see the way refused NBD connects are recorded: the first of
 * a kind (event type, export, client address, and what the caller says tells them apart) at
 * once, then one event an interval with how many more came. A flood of boot requests, or of
 * made-up MACs, costs a few rows an interval instead of one per request.
 */
export class SummarisedEvents {
  private readonly summary: IntervalSummary<Occurrence & { kind: string }>;
  private readonly timer: NodeJS.Timeout;

  constructor(events: Pick<EventLog, 'record'>, { intervalMs = 10_000, maxKinds = 256 }: { intervalMs?: number; maxKinds?: number } = {}) {
    this.summary = new IntervalSummary({
      kindOf: (occurrence) => occurrence.kind,
      recordFirst: ({ type, exportName, details }) => events.record(type, exportName, details),
      recordRepeats: ({ first, count, since, overflow }) => {
        const client = overflow ? otherClients : first.details.client;
        events.record(first.type, overflow ? null : first.exportName, { ...first.details, client, count, since });
      },
      intervalMs,
      maxKinds,
    });
    this.timer = setInterval(() => this.summary.sweep(), Math.min(intervalMs, 1000)).unref();
  }

  /** `kind` adds what else tells occurrences apart besides their type, export and client (a status, a menu). */
  record<T extends SummarisedType>(type: T, exportName: string | null, details: EventDetails[T], kind: readonly unknown[] = []): void {
    this.summary.add({ type, exportName, details, kind: JSON.stringify([type, exportName, details.client, ...kind]) });
  }

  /** Records every count still open, so none is lost at shutdown. */
  stop(): void {
    clearInterval(this.timer);
    this.summary.flush();
  }
}
