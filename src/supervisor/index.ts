import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { DataDirSpace } from '../db/data-dir-space.js';
import type { Db } from '../db/open.js';
import type { EventLog } from '../events/event-log.js';
import { RefusalSummary } from '../events/refusal-summary.js';
import { type AllowList } from '../rules/allow-list.js';
import { errorText, type Logger } from '../log.js';
import { refusalOf } from './admission.js';
import { ConnectionStore } from './connection-store.js';
import { ConnectionTable } from './connections.js';
import { ConfigVariants } from './config-variants.js';
import { prepareCowDir, removeLeftoverCowDiffs } from './cow-diffs.js';
import { configEnablesTls, detectFastStart, type FastStart } from './fast-start.js';
import type { MachineExports, ServedExport } from './nbd-config.js';
import { probeNbdServer } from './nbd-server-binary.js';
import { nbdServerGreets } from './self-test.js';
import { describeShortage } from './shortages.js';
import { Spawner } from './spawner.js';
import { StartFailures } from './start-failures.js';
import { WarmPool } from './warm-pool.js';
import { clientAddressOf } from '../rules/client-address.js';

export type { BootedVersion, MachineExports, ServedExport, ServedState } from './nbd-config.js';
export type { ConnectionTable, ConnectionView } from './connections.js';
export type { LiveConnection } from './live-connection.js';

export interface SupervisorOptions {
  dataDir: string;
  nbdServerBin: string;
  nbdPort: number;
  nbdBind: string | undefined;
  maxConnections: number;
  /** Live connections from one address that have not chosen an export yet, at most. */
  maxPendingPerClient: number;
  /** How long after accept a client has to choose an export before it is cut. */
  negotiationTimeoutMs: number;
  /** nbd-server processes kept started ahead of demand (0: each client's is spawned after accept). */
  warmPool: number;
  nbdAllow: AllowList;
  db: Db;
  events: EventLog;
  space: DataDirSpace;
  log: Logger;
}

export interface DataPlaneHealth {
  ok: boolean;
  problems: string[];
  nbdListening: boolean;
  nbdAddress: string | null;
  nbdPort: number | null;
  nbdServerVersion: string | null;
  /** nbd-server processes start with the fast-start shim; when not, fastStartReason says why. */
  fastStart: boolean;
  fastStartReason: string | null;
  /** --nbd-warm-pool's size and its processes ready to be handed a client now; null while the pool is off. */
  warmPool: { size: number; ready: number } | null;
}

const refreshIntervalMs = 1000;
const probeCacheMs = 2000;

/**
 * Owns the NBD port and every nbd-server process. nbd-server 3.24 cannot reload its config
 * safely (SIGHUP corrupts its heap), so each connection gets a fresh process that reads the
 * current config at its start: a change applies to the next client and never to a live one.
 */
export class Supervisor {
  readonly connections: ConnectionTable;
  readonly configPath: string;
  /** Where copy-on-write connections keep their diff files. */
  readonly cowDir: string;
  private readonly store: ConnectionStore;
  private readonly configs: ConfigVariants;
  private readonly server: net.Server;
  private readonly spawner: Spawner;
  private readonly pool: WarmPool | null;
  private readonly refusals: RefusalSummary;
  private readonly refreshTimer: NodeJS.Timeout;
  private readonly startFailures: StartFailures;
  private configEnablesTls = false;
  /** Copied once: reading process.env is slow, and spawn would copy it at every start. */
  private readonly plainEnv: NodeJS.ProcessEnv = { ...process.env };
  private readonly fastStartEnv: NodeJS.ProcessEnv | null;
  /** Whether the binary runs (`-V`): asked again at most every 2 s, however often health is. */
  private readonly probeCached: () => Promise<string>;
  /** After a failed start, a real nbd-server start decides whether it works again (at most one every 2 s). */
  private readonly checkRecovered: () => Promise<void>;

  private constructor(
    private readonly options: SupervisorOptions,
    version: string,
    private readonly fastStart: FastStart,
  ) {
    const { db, events, space, log } = options;
    this.configPath = path.join(options.dataDir, 'nbd-server.conf');
    this.cowDir = path.join(options.dataDir, 'cow');
    this.configs = new ConfigVariants(this.configPath, this.cowDir);
    this.probeCached = reusedFor(probeCacheMs, () => probeNbdServer(options.nbdServerBin), Promise.resolve(version));
    this.checkRecovered = reusedFor(probeCacheMs, () => nbdServerGreets(options.nbdServerBin, this.configPath, this.nbdServerEnv()));
    this.fastStartEnv = fastStart.enabled ? { ...this.plainEnv, ...fastStart.env } : null;
    this.store = new ConnectionStore(db, space);
    this.connections = new ConnectionTable(this.store, events, this.cowDir);
    this.refusals = new RefusalSummary({ record: ({ exportName, details }) => events.record('connection.refused', exportName, details) });
    this.startFailures = new StartFailures(events, log);
    this.pool = this.createPool();
    this.spawner = new Spawner({
      bin: options.nbdServerBin,
      configFor: (conn) => this.configs.forClient(conn.clientAddress),
      env: () => this.nbdServerEnv(),
      maxConcurrentStarts: 2 * os.availableParallelism(),
      negotiationTimeoutMs: options.negotiationTimeoutMs,
      table: this.connections,
      log,
      onStartFailed: (conn, reason) => this.startFailures.failed({ connection: conn.id, client: conn.clientAddress, reason }),
      onNegotiated: () => this.startFailures.recovered(),
      admit: (conn, report) => {
        const refusal = refusalOf(conn, report, { store: this.store, configs: this.configs, connections: this.connections });
        if (refusal !== null) this.recordRefusal(refusal.exportName, conn.clientAddress, conn.clientPort, refusal.reason);
        return refusal === null;
      },
      pool: this.pool,
    });
    this.server = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
    this.refreshTimer = setInterval(() => {
      this.connections.refresh();
      this.refusals.sweep();
      this.startFailures.sweep();
      this.configs.removeStale();
    }, refreshIntervalMs).unref();
  }

  /**
   * Only with fast start in effect: a pool process skips nothing else, so without the shim it
   * would still spend 0.1-0.4 s of CPU per client after the hand-off, outside the start bound.
   */
  private createPool(): WarmPool | null {
    const { warmPool, nbdServerBin, maxConnections, log } = this.options;
    if (warmPool === 0) return null;
    const pool = new WarmPool({
      bin: nbdServerBin,
      size: warmPool,
      env: () => (this.fastStartEnv !== null && !this.configEnablesTls ? this.fastStartEnv : null),
      mayGrow: (poolSize) => this.connections.size + poolSize < maxConnections,
      busy: () => this.spawner.busy,
      onReady: () => this.spawner.startWaiting(),
      // Longer than every variant's path (`.` and 16 hex digits), so the shim writes the real one over it in place.
      unassignedConfig: `${this.configPath}.unassigned-warm-pool-process`,
      log,
    });
    if (!pool.available) {
      log.warn('warm pool off: its shim was not built (run npm run build with a C compiler); every client is spawned for');
      return null;
    }
    if (this.fastStartEnv === null) log.warn('warm pool off: it needs fast start, which is off (see the fast start warning)');
    return pool;
  }

  /** Checks the binary, writes the config, adopts surviving connections, then listens: machines' states are served from the first connection. */
  static async start(options: SupervisorOptions, exports: readonly ServedExport[], machines: MachineExports): Promise<Supervisor> {
    const version = await probeNbdServer(options.nbdServerBin);
    const fastStart = await detectFastStart(options.nbdServerBin);
    if (!fastStart.enabled)
      options.log.warn('fast start off: nbd-server runs without the shim that skips its unused DH parameters', {
        reason: fastStart.reason,
      });
    const supervisor = new Supervisor(options, version, fastStart);
    prepareCowDir(supervisor.cowDir);
    supervisor.applyExports(exports);
    supervisor.applyMachines(machines);
    const { adopted, ended, cut } = supervisor.connections.adoptSurvivors();
    if (adopted + ended + cut > 0) options.log.info('found connections of an earlier run', { adopted, ended, cut });
    // Diffs of serving processes killed while no nbdmux watched; adopted ones keep theirs.
    const livePids = new Set(supervisor.connections.list().flatMap((conn) => (conn.pid === null ? [] : [conn.pid])));
    const leftovers = removeLeftoverCowDiffs(supervisor.cowDir, livePids);
    if (leftovers > 0) options.log.info('removed copy-on-write diffs left by killed processes', { count: leftovers });
    try {
      await supervisor.listen();
    } catch (err) {
      clearInterval(supervisor.refreshTimer);
      throw err;
    }
    return supervisor;
  }

  /** Makes `exports` the set every new connection sees. Synchronous, so callers can keep it in step with a transaction. */
  applyExports(exports: readonly ServedExport[]): void {
    this.configEnablesTls = configEnablesTls(this.configs.apply(exports));
    // Processes started for the other side of a TLS change are replaced.
    this.pool?.refill();
  }

  /** Makes these the machines' state exports and booted versions new connections from their addresses get. */
  applyMachines(machines: MachineExports): void {
    this.configs.applyMachines(machines);
  }

  get maxConnections(): number {
    return this.options.maxConnections;
  }

  get address(): net.AddressInfo | null {
    const address = this.server.address();
    return address !== null && typeof address === 'object' ? address : null;
  }

  async health(): Promise<DataPlaneHealth> {
    const problems: string[] = [];
    const address = this.address;
    if (!this.server.listening || address === null) problems.push('the NBD listener is not accepting connections');
    let version: string | null = null;
    try {
      version = await this.probeCached();
    } catch (err) {
      problems.push((err as Error).message);
    }
    // A failed start is only history once nbd-server is seen starting again; the check's
    // reason is the freshest one to show.
    const failing = this.startFailures.failing;
    if (failing !== null && version !== null) {
      try {
        await this.checkRecovered();
        this.startFailures.recovered(failing.failedStarts);
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    this.options.space.check();
    const spaceProblem = this.options.space.problem;
    if (spaceProblem !== null) problems.push(spaceProblem);
    const fastStartReason = this.fastStartOffReason();
    return {
      ok: problems.length === 0,
      problems,
      nbdListening: this.server.listening,
      nbdAddress: address?.address ?? null,
      nbdPort: address?.port ?? null,
      nbdServerVersion: version,
      fastStart: fastStartReason === null,
      fastStartReason,
      warmPool: this.pool === null ? null : { size: this.options.warmPool, ready: this.pool.readyCount },
    };
  }

  /** Stops accepting; serving processes keep running so their machines keep their disks. */
  async stop(): Promise<void> {
    clearInterval(this.refreshTimer);
    this.pool?.stop();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.spawner.flush();
    this.refusals.flush();
    this.startFailures.flush();
    await closed;
  }

  private accept(socket: net.Socket): void {
    const client = clientAddressOf(socket);
    const port = socket.remotePort ?? 0;
    const { nbdAllow, maxPendingPerClient, maxConnections } = this.options;
    const refusal = !nbdAllow.allows(client)
      ? `${client} is not in --nbd-allow`
      : this.connections.pendingFrom(client) >= maxPendingPerClient
        ? `${client} already has ${maxPendingPerClient} connections that have not chosen an export (--nbd-max-pending-per-client)`
        : this.connections.size >= maxConnections
          ? `the connection limit (${maxConnections}) is reached`
          : null;
    if (refusal !== null) {
      // Closed before any nbd-server starts: the client learns nothing, not even the export list.
      socket.on('error', () => {});
      socket.destroy();
      this.recordRefusal(null, client, port, refusal);
      return;
    }
    this.spawner.enqueue(socket, this.connections.open(client, port));
  }

  /**
   * Every refused client is counted here, whichever check refused it; refusals are summarised,
   * not recorded one by one (see RefusalSummary).
   */
  private recordRefusal(exportName: string | null, client: string, port: number, reason: string): void {
    this.refusals.refuse({ client, port, reason, exportName });
  }

  /**
   * Node reports a failed accept as an 'error' on the server, which would end the daemon with no
   * listener. (Node 20 handles EMFILE itself: it closes the pending client, or retries the accept
   * until a descriptor frees up, and never gets here for it.)
   */
  private acceptFailed(err: NodeJS.ErrnoException): void {
    this.options.log.warn('cannot accept an NBD connection', { error: errorText(err) });
    this.recordRefusal(null, 'unknown', 0, `cannot accept the connection: ${describeShortage(err) ?? err.message}`);
  }

  private listen(): Promise<void> {
    const { nbdPort, nbdBind } = this.options;
    return new Promise((resolve, reject) => {
      const listenFailed = (err: NodeJS.ErrnoException) => {
        const where = `${nbdBind ?? 'all addresses'} port ${nbdPort}`;
        reject(
          new Error(err.code === 'EADDRINUSE' ? `NBD port already in use: ${where}` : `cannot listen for NBD on ${where}: ${err.message}`),
        );
      };
      this.server.once('error', listenFailed);
      this.server.listen({ port: nbdPort, host: nbdBind }, () => {
        // From now on an error is a failed accept (EMFILE...): one client lost, never the daemon.
        this.server.off('error', listenFailed);
        this.server.on('error', (err) => this.acceptFailed(err));
        resolve();
      });
    });
  }

  private fastStartOffReason(): string | null {
    const { fastStart } = this;
    if (!fastStart.enabled) return fastStart.reason;
    return this.configEnablesTls ? 'the nbd-server config enables TLS, which may use the DH parameters the shim skips' : null;
  }

  private nbdServerEnv(): NodeJS.ProcessEnv {
    return this.fastStartEnv !== null && !this.configEnablesTls ? this.fastStartEnv : this.plainEnv;
  }
}

/** Calls `run` at most once every `ms`, answering in between with the last call's promise. */
function reusedFor<T>(ms: number, run: () => Promise<T>, first?: Promise<T>): () => Promise<T> {
  let last = first === undefined ? null : { at: Date.now(), result: first };
  return () => {
    if (last === null || Date.now() - last.at > ms) last = { at: Date.now(), result: run() };
    return last.result;
  };
}
