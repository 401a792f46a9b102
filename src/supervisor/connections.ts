import type { ConnectionRow } from '../db/schema.js';
import type { EventLog } from '../events/event-log.js';
import type { ConnectionStore } from './connection-store.js';
import { removeCowDiff } from './cow-diffs.js';
import type { Report } from './report-pipe.js';
import { isRunning, killProcess, readStartTicks } from './proc.js';
import { sampleConnections, sampleFinalBytes, sampleLastBytes } from './sampler.js';
import type { LiveConnection } from './live-connection.js';

export type Outcome = NonNullable<ConnectionRow['outcome']>;

/** A connection as the control plane shows it, live or ended. */
export type ConnectionView = Omit<ConnectionRow, 'pidStartTicks'> & { exportName: string | null; live: boolean; bytesPerSecond: number };

export interface CloseDetails {
  outcome: Outcome;
  exitCode?: number | null;
  signal?: string | null;
  error?: string | null;
  /** Its end is counted in a summary event (a failed nbd-server start: see StartFailures), not an event of its own; the row is written all the same. */
  summarised?: boolean;
}

/**
 * Every connection on the NBD port from accept to close: kept in memory while live, and each
 * step recorded, in its row (the ConnectionStore) and as an event.
 */
export class ConnectionTable {
  private readonly live = new Map<number, LiveConnection>();
  /** Ids of connections served without a row (the data dir was full): negative, so never a row's. */
  private lastUnrecordedId = 0;

  constructor(
    private readonly store: ConnectionStore,
    private readonly events: EventLog,
    private readonly cowDir: string,
  ) {}

  get size(): number {
    return this.live.size;
  }

  list(): LiveConnection[] {
    return [...this.live.values()];
  }

  /** The newest connections first, live ones with their current byte counts. */
  recent(limit: number, liveOnly: boolean): ConnectionView[] {
    const rows = this.store.recent(limit, liveOnly);
    return rows.map(({ connection: { pidStartTicks: _pidStartTicks, ...row }, exportName }) => {
      const live = this.live.get(row.id);
      return {
        ...row,
        exportName,
        live: live !== undefined,
        bytesSent: live?.bytesSent ?? row.bytesSent,
        bytesPerSecond: live?.bytesPerSecond ?? 0,
        cowDiffBytes: live?.cowDiffBytes ?? row.cowDiffBytes,
      };
    });
  }

  /** Live connections from this address whose client has not chosen an export yet. */
  pendingFrom(clientAddress: string): number {
    let pending = 0;
    for (const conn of this.live.values()) if (conn.clientAddress === clientAddress && !hasChosen(conn)) pending++;
    return pending;
  }

  countByExport(): Map<number, number> {
    const counts = new Map<number, number>();
    for (const conn of this.live.values()) {
      if (conn.exportId !== null) counts.set(conn.exportId, (counts.get(conn.exportId) ?? 0) + 1);
    }
    return counts;
  }

  /** Live connections per version they attached. */
  countByVersion(): Map<number, number> {
    const counts = new Map<number, number>();
    for (const conn of this.live.values()) {
      if (conn.versionId !== null) counts.set(conn.versionId, (counts.get(conn.versionId) ?? 0) + 1);
    }
    return counts;
  }

  /**
   * A full data dir does not cut a booting machine: its connection is served without a row
   * (shown in export counts, not in the connection list, and not adopted after a restart).
   */
  open(clientAddress: string, clientPort: number): LiveConnection {
    const values = { clientAddress, clientPort, openedAt: new Date().toISOString() };
    const row = this.store.insert(values);
    const conn = fromRow(row ?? unrecordedRow(--this.lastUnrecordedId, values), false);
    this.live.set(conn.id, conn);
    this.events.record('connection.opened', null, { connection: conn.id, client: clientAddress, port: clientPort });
    return conn;
  }

  attachProcess(conn: LiveConnection, pid: number): void {
    conn.pid = pid;
    conn.pidStartTicks = readStartTicks(pid);
    this.store.update(conn.id, { pid, pidStartTicks: conn.pidStartTicks });
  }

  negotiated(conn: LiveConnection, report: Report): void {
    if (!this.live.has(conn.id) || hasChosen(conn)) return;
    if ('machineId' in report) {
      conn.machineId = report.machineId;
      conn.negotiatedAt = new Date().toISOString();
      this.store.update(conn.id, { machineId: conn.machineId, negotiatedAt: conn.negotiatedAt });
      this.events.record('connection.negotiated', null, { connection: conn.id, client: conn.clientAddress, machineState: conn.machineId });
      return;
    }
    const { exportId, versionId } = report;
    const exp = this.store.exportById(exportId);
    if (!exp) return; // not an id we ever wrote: ignore rather than trust it
    conn.exportId = exportId;
    // Like the export id, a version id we never wrote is not trusted.
    conn.versionId = versionId !== null && this.store.isVersionOf(versionId, exportId) ? versionId : null;
    conn.negotiatedAt = new Date().toISOString();
    this.store.update(conn.id, { exportId, versionId: conn.versionId, negotiatedAt: conn.negotiatedAt });
    this.events.record('connection.negotiated', exp.name, { connection: conn.id, client: conn.clientAddress });
  }

  /**
   * The process reported from its postrun that its connection is over, and exists until it is
   * answered: what it sent is final, and read now (`reportedBytes`, its own count, replaces
   * every sample). Its close comes too late for that (the process is reaped by then, and its pid free for another).
   */
  ending(conn: LiveConnection, reportedBytes: number | null): void {
    if (!this.live.has(conn.id) || conn.bytesFinal) return;
    sampleFinalBytes(conn, reportedBytes);
    conn.bytesFinal = true;
  }

  close(conn: LiveConnection, details: CloseDetails): void {
    if (!this.live.delete(conn.id)) return;
    // Without a postrun report (a killed process, one adopted or started by an nbdmux before it): what /proc still shows.
    if (!conn.bytesFinal) sampleLastBytes(conn);
    // nbd-server removes its diff on a clean end; a killed or crashed one leaves it behind.
    if (conn.pid !== null && !this.list().some((other) => other.pid === conn.pid)) this.removeDiff(conn);
    // Left open when the data dir is full: the next start closes it as ended while not watched.
    this.store.update(conn.id, {
      closedAt: new Date().toISOString(),
      outcome: details.outcome,
      exitCode: details.exitCode ?? null,
      signal: details.signal ?? null,
      error: details.error ?? null,
      bytesSent: conn.bytesSent,
      cowDiffBytes: conn.cowDiffBytes,
    });
    if (details.summarised) return;
    this.events.record('connection.closed', this.exportName(conn.exportId), {
      connection: conn.id,
      client: conn.clientAddress,
      outcome: details.outcome,
      bytesSent: conn.bytesSent,
      ...(details.exitCode != null && { exitCode: details.exitCode }),
      ...(details.signal != null && { signal: details.signal }),
      ...(details.error != null && { error: details.error }),
    });
  }

  /**
   * Takes over connections an earlier nbdmux left serving (its processes outlive it on purpose),
   * and closes the rows of those that ended while no nbdmux was watching. A process whose client
   * had chosen no export is killed instead: its report went to the dead daemon, so no one could
   * ever tell which export it serves, or cut it on a forced removal.
   */
  adoptSurvivors(): { adopted: number; ended: number; cut: number } {
    let adopted = 0;
    let ended = 0;
    let cut = 0;
    for (const row of this.store.unclosed()) {
      const conn = fromRow(row, true);
      this.live.set(conn.id, conn);
      const running = conn.pid !== null && conn.pidStartTicks !== null && isRunning({ pid: conn.pid, startTicks: conn.pidStartTicks });
      if (running && !hasChosen(conn)) {
        cut++;
        killProcess(conn.pid!); // ours: pid and start time match
        this.close(conn, {
          outcome: 'not-served',
          error: 'had chosen no export when nbdmux restarted: cut, since no daemon can learn which export it serves',
        });
      } else if (running) {
        adopted++;
        this.events.record('connection.adopted', this.exportName(conn.exportId), { connection: conn.id, pid: conn.pid });
      } else {
        ended++;
        this.close(conn, {
          outcome: hasChosen(conn) ? 'closed' : 'not-served',
          error: 'ended while nbdmux was not running',
        });
      }
    }
    return { adopted, ended, cut };
  }

  /** Closes adopted connections whose process is gone, then samples bytes sent by every live process. */
  refresh(): void {
    for (const conn of this.live.values()) {
      if (adoptedAndEnded(conn)) this.close(conn, { outcome: conn.killRequested ? 'killed' : 'closed' });
    }
    sampleConnections(this.live.values(), this.cowDir);
  }

  /** SIGKILLs every process serving one of these exports (SIGTERM is ignored while nbd-server serves). */
  kill(exportIds: ReadonlySet<number>): number {
    let killed = 0;
    for (const conn of this.live.values()) {
      if (conn.exportId === null || !exportIds.has(conn.exportId) || conn.pid === null) continue;
      if (adoptedAndEnded(conn)) continue;
      // Already gone when it fails: its close is on its way.
      if (!killProcess(conn.pid)) continue;
      conn.killRequested = true;
      killed++;
      this.removeDiff(conn);
    }
    this.refresh();
    return killed;
  }

  /** Removes the diff a killed serving process leaves, keeping its last size for the record. */
  private removeDiff(conn: LiveConnection): void {
    if (conn.pid !== null) conn.cowDiffBytes = removeCowDiff(this.cowDir, conn.pid) ?? conn.cowDiffBytes;
  }

  private exportName(exportId: number | null): string | null {
    return exportId === null ? null : (this.store.exportById(exportId)?.name ?? null);
  }
}

/** Whether the client has chosen what it is served: an export, or its machine's state. */
export function hasChosen(conn: Pick<LiveConnection, 'exportId' | 'machineId'>): boolean {
  return conn.exportId !== null || conn.machineId !== null;
}

/** An adopted process is not our child, so no 'close' tells its end: /proc does. */
function adoptedAndEnded(conn: LiveConnection): boolean {
  return conn.adopted && conn.pid !== null && !isRunning({ pid: conn.pid, startTicks: conn.pidStartTicks ?? -1 });
}

function unrecordedRow(id: number, values: Pick<ConnectionRow, 'clientAddress' | 'clientPort' | 'openedAt'>): ConnectionRow {
  return {
    id,
    ...values,
    exportId: null,
    versionId: null,
    machineId: null,
    pid: null,
    pidStartTicks: null,
    negotiatedAt: null,
    closedAt: null,
    outcome: null,
    exitCode: null,
    signal: null,
    bytesSent: 0,
    cowDiffBytes: null,
    error: null,
  };
}

function fromRow(row: ConnectionRow, adopted: boolean): LiveConnection {
  return {
    id: row.id,
    exportId: row.exportId,
    versionId: row.versionId,
    machineId: row.machineId,
    clientAddress: row.clientAddress,
    clientPort: row.clientPort,
    pid: row.pid,
    pidStartTicks: row.pidStartTicks,
    openedAt: row.openedAt,
    negotiatedAt: row.negotiatedAt,
    bytesSent: row.bytesSent,
    reportBytes: 0,
    bytesFinal: false,
    bytesPerSecond: 0,
    sampledAt: null,
    cowDiffBytes: row.cowDiffBytes,
    adopted,
    killRequested: false,
  };
}
