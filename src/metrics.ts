import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { connectionsTable, type EventRow } from './db/schema.js';
import type { EventLog } from './events/event-log.js';
import type { ExportRegistry } from './exports/registry.js';
import type { ConnectionTable } from './supervisor/index.js';
import { readBytesWritten } from './supervisor/proc.js';

export interface MetricsSources {
  events: EventLog;
  connections: Pick<ConnectionTable, 'list'>;
  exports: Pick<ExportRegistry, 'list'>;
}

/** Results of an import, as its final event names them (`import.done` ...). */
const importResults = ['done', 'failed', 'cancelled'];

/**
 * What GET /metrics shows Prometheus, in a registry of its own. Counters are fed by the event
 * bus; gauges and bytes sent are read from the exports and the live connection table at each
 * scrape. The only label values are export names, outcomes and event kinds: never a client
 * address, and the series of an export are dropped once it is neither served nor draining, so
 * months of exports created and removed leave no series behind.
 */
export class Metrics {
  private readonly registry = new Registry();
  private readonly exportsByState = new Gauge({
    name: 'nbdmux_exports',
    help: 'Exports by state: serving, or removed and draining live connections',
    labelNames: ['state'],
    registers: [this.registry],
  });
  private readonly liveConnections = new Gauge({
    name: 'nbdmux_connections_live',
    help: 'Live NBD connections per export',
    labelNames: ['export'],
    registers: [this.registry],
  });
  private readonly negotiating = new Gauge({
    name: 'nbdmux_connections_negotiating',
    help: 'Live NBD connections whose client has not chosen an export yet',
    registers: [this.registry],
  });
  private readonly bytesSent = new Counter({
    name: 'nbdmux_bytes_sent_total',
    help: 'Bytes nbd-server processes sent to clients, per export',
    labelNames: ['export'],
    registers: [this.registry],
  });
  private readonly closed = new Counter({
    name: 'nbdmux_connections_closed_total',
    help: 'Ended NBD connections by outcome',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  private readonly refused = new Counter({
    name: 'nbdmux_connections_refused_total',
    help: 'NBD connections refused (allow lists, limits, failed accepts)',
    registers: [this.registry],
  });
  private readonly negotiation = new Histogram({
    name: 'nbdmux_negotiation_seconds',
    help: 'Time from accepting an NBD connection to its client choosing an export',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly startFailures = new Counter({
    name: 'nbdmux_nbd_server_start_failures_total',
    help: 'nbd-server processes that failed to start or to serve',
    registers: [this.registry],
  });
  private readonly bootStages = new Counter({
    name: 'nbdmux_boot_stages_total',
    help: 'Boot stages machines reached, per export',
    labelNames: ['export', 'stage'],
    registers: [this.registry],
  });
  private readonly imports = new Counter({
    name: 'nbdmux_imports_total',
    help: 'Finished imports by result',
    labelNames: ['result'],
    registers: [this.registry],
  });
  private readonly subscribers = new Gauge({
    name: 'nbdmux_event_subscribers',
    help: 'Live events.stream subscriptions',
    registers: [this.registry],
  });

  /**
   * Per live connection, the bytes already added to `nbdmux_bytes_sent_total`: the counter grows
   * by each sample's difference, and by the rest at the close. A connection adopted from an
   * earlier nbdmux starts at what it had sent by then, which was that daemon's to count.
   */
  private readonly counted = new Map<number, number>();
  private readonly onEvent = (event: EventRow) => this.count(event);

  constructor(private readonly sources: MetricsSources) {
    collectDefaultMetrics({ register: this.registry });
    for (const outcome of connectionsTable.outcome.enumValues) this.closed.inc({ outcome }, 0);
    for (const result of importResults) this.imports.inc({ result }, 0);
    for (const conn of sources.connections.list()) {
      if (conn.adopted && conn.pid !== null) this.counted.set(conn.id, readBytesWritten(conn.pid) ?? conn.bytesSent);
    }
    sources.events.on('event', this.onEvent);
  }

  /** The text Prometheus scrapes, with gauges and byte counts as of now. */
  async scrape(): Promise<string> {
    const exports = this.sources.exports.list();
    const namesById = new Map(exports.map((view) => [view.id, view.name]));
    // A live sample is the process's wchar, which also counts what a client writes to the image or
    // its diff: where clients can write, only the count at the close is bytes sent, and the counter,
    // which cannot go down, waits for it.
    const samplesAreSent = new Set(exports.filter((view) => view.readonly && !view.cow).map((view) => view.id));
    this.exportsByState.reset();
    this.exportsByState.set({ state: 'serving' }, 0);
    this.exportsByState.set({ state: 'draining' }, 0);
    this.liveConnections.reset();
    for (const view of exports) {
      this.exportsByState.inc({ state: view.state });
      // Present from the export's start, so that a rate over it does not miss its first bytes.
      this.bytesSent.inc({ export: view.name }, 0);
      this.liveConnections.inc({ export: view.name }, view.connections);
    }
    const live = this.sources.connections.list();
    this.negotiating.set(live.filter((conn) => conn.exportId === null).length);
    for (const conn of live) {
      const name = conn.exportId === null || !samplesAreSent.has(conn.exportId) ? undefined : namesById.get(conn.exportId);
      if (name !== undefined) this.countBytes(conn.id, name, conn.bytesSent);
    }
    // A connection that ended without a recorded close (the data dir was full) is not counted on.
    const liveIds = new Set(live.map((conn) => conn.id));
    for (const id of this.counted.keys()) if (!liveIds.has(id)) this.counted.delete(id);
    this.subscribers.set(this.sources.events.subscribers);
    const names = new Set(namesById.values());
    await Promise.all([dropExportsGone(this.bytesSent, names), dropExportsGone(this.bootStages, names)]);
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  stop(): void {
    this.sources.events.off('event', this.onEvent);
    this.registry.clear();
  }

  private count(event: EventRow): void {
    switch (event.type) {
      case 'connection.closed':
        this.closed.inc({ outcome: event.details.outcome });
        if (event.exportName !== null) this.countBytes(event.details.connection, event.exportName, event.details.bytesSent);
        this.counted.delete(event.details.connection);
        return;
      case 'connection.negotiated':
        this.observeNegotiation(event.details.connection);
        return;
      case 'connection.refused':
        this.refused.inc(event.details.count);
        return;
      case 'nbd-server.failed':
        // Repeats of one reason come as one event with their count (see StartFailures).
        this.startFailures.inc(event.details.count ?? 1);
        return;
    }
    // Recorded by boot routes and imports where they exist: matched by name, so these count once they do.
    const type: string = event.type;
    // A summary of repeats (see SummarisedEvents) stands for `count` fetches.
    if (type.startsWith('boot.') && event.exportName !== null)
      this.bootStages.inc(
        { export: event.exportName, stage: type.slice('boot.'.length) },
        (event.details as { count?: number }).count ?? 1,
      );
    const result = type.startsWith('import.') ? type.slice('import.'.length) : undefined;
    if (result !== undefined && importResults.includes(result)) this.imports.inc({ result });
  }

  /** Adds what a connection sent since it was last counted (before its first sample, `bytes` is behind: nothing). */
  private countBytes(id: number, exportName: string, bytes: number): void {
    const before = this.counted.get(id) ?? 0;
    if (bytes > before) this.bytesSent.inc({ export: exportName }, bytes - before);
    this.counted.set(id, Math.max(bytes, before));
  }

  private observeNegotiation(id: number): void {
    const conn = this.sources.connections.list().find((candidate) => candidate.id === id);
    if (conn?.negotiatedAt == null) return;
    this.negotiation.observe(Math.max(0, Date.parse(conn.negotiatedAt) - Date.parse(conn.openedAt)) / 1000);
  }
}

/** Removes the series of exports no longer served nor draining. */
async function dropExportsGone(metric: Counter<'export'> | Counter<'export' | 'stage'>, names: ReadonlySet<string>): Promise<void> {
  for (const { labels } of (await metric.get()).values) {
    if (!names.has(String(labels.export))) metric.remove(labels as Record<string, string>);
  }
}
