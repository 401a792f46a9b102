import { spawn, type ChildProcess } from 'node:child_process';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { errorText, type Logger } from '../log.js';
import type { ClientConfig } from './config-variants.js';
import { classifyClose, noExportChosen } from './close-classification.js';
import { hasChosen, type ConnectionTable } from './connections.js';
import type { LiveConnection } from './live-connection.js';
import { reportFd } from './nbd-config.js';
import { isOnCpu, killProcess } from './proc.js';
import { answerReports, type Report } from './report-pipe.js';
import { describeShortage } from './shortages.js';
import type { Member, WarmPool } from './warm-pool.js';

/**
 * A start counts against the bound until the export is chosen or the process ends. Past this
 * long it keeps counting only while the process is busy on the CPU (DH parameters without the
 * fast-start shim take 0.1-0.4 s, longer on a loaded machine): a start merely waiting for a
 * slow or idle client frees its slot, a still-computing one never lets the next pile on.
 */
const startSlotMs = 500;
const stderrKeepBytes = 2048;

export interface SpawnerOptions {
  bin: string;
  /** The config this client's process reads (only the exports it may see) and their descriptors; asked at each start. */
  configFor: (conn: LiveConnection) => ClientConfig;
  /** Environment of each nbd-server process (fast start preloads its shim there); read at each start. */
  env: () => NodeJS.ProcessEnv;
  maxConcurrentStarts: number;
  /** A client that has chosen no export this long after accept is cut: queued or not, served by nobody. */
  negotiationTimeoutMs: number;
  table: ConnectionTable;
  log: Logger;
  /** nbd-server failed for this client; true when that was news, false when only counted (the connection's end is then summarised too). */
  onStartFailed: (conn: LiveConnection, reason: string) => boolean;
  onNegotiated: () => void;
  /** Whether this client may use the export or machine state it chose; a refusal is the caller's to record. */
  admit: (conn: LiveConnection, report: Report) => boolean;
  /** Processes already past exec and linking (--nbd-warm-pool); null: every client is spawned for. */
  pool: WarmPool | null;
}

/** An accepted connection, from the queue until its process ends. */
interface Accepted {
  socket: net.Socket;
  conn: LiveConnection;
  /** Runs out at the negotiation bound, counted from accept so that time in the queue counts too. */
  deadline: NodeJS.Timeout;
  /** The bound ran out: the end of its process is recorded as that, not as a crash. */
  expired: boolean;
}

/**
 * Runs one nbd-server per connection in inetd mode (the accepted socket as its stdin and
 * stdout), a few starts at a time: a start is CPU work (0.1-0.4 s of it without the fast-start
 * shim, see fast-start.ts), so a boot storm waits in line instead of thrashing. Processes run
 * in their own session so that they outlive nbdmux: a netbooted machine must not lose its root
 * disk when the daemon restarts.
 */
export class Spawner {
  private starting = 0;
  /** Clients handed to a pool process that have not chosen an export yet: the refill's spawn would compete with them for the CPU. */
  private handing = 0;
  private readonly waiting: Accepted[] = [];
  /** Shutting down: a client whose hand-off fails now is started at once, as flush() starts the queue. */
  private flushed = false;

  constructor(private readonly options: SpawnerOptions) {}

  enqueue(socket: net.Socket, conn: LiveConnection): void {
    const accepted: Accepted = {
      socket,
      conn,
      deadline: setTimeout(() => this.cutUnnegotiated(accepted), this.options.negotiationTimeoutMs),
      expired: false,
    };
    this.waiting.push(accepted);
    this.startWaiting();
  }

  /** At shutdown: start everyone still waiting at once, so no accepted client is dropped. */
  flush(): void {
    this.flushed = true;
    for (const accepted of this.waiting.splice(0)) this.start(accepted, () => {});
  }

  /**
   * A client that sends nothing would hold its slot of --max-connections for ever, and no
   * forced removal reaches it (it chose no export): past the bound it is cut.
   */
  private cutUnnegotiated(accepted: Accepted): void {
    const { conn } = accepted;
    if (hasChosen(conn)) return;
    accepted.expired = true;
    const queued = this.waiting.indexOf(accepted);
    if (queued >= 0) {
      this.waiting.splice(queued, 1);
      closeSocket(accepted.socket);
      this.options.table.close(conn, { outcome: 'not-served', error: noExportChosen(this.options.negotiationTimeoutMs) });
    } else if (conn.pid !== null) {
      killProcess(conn.pid); // its 'close' records the connection
    }
  }

  /** Whether clients are queued or being started: the pool refills only when none are. */
  get busy(): boolean {
    return this.waiting.length > 0 || this.starting > 0 || this.handing > 0;
  }

  startWaiting(): void {
    // A pool process has done the CPU work a start slot bounds (exec, linking, and DH parameters skipped by fast start): no slot.
    const { pool } = this.options;
    for (let member = this.waiting.length > 0 ? pool?.take() : null; member; member = this.waiting.length > 0 ? pool?.take() : null) {
      this.handing++;
      this.start(
        this.waiting.shift()!,
        onlyOnce(() => this.handing--),
        member,
      );
    }
    while (this.starting < this.options.maxConcurrentStarts && this.waiting.length > 0) {
      const accepted = this.waiting.shift()!;
      const { conn } = accepted;
      this.starting++;
      const release = onlyOnce(() => {
        clearTimeout(timer);
        this.starting--;
        this.startWaiting();
      });
      const expire = () => {
        if (conn.pid !== null && isOnCpu(conn.pid)) timer = setTimeout(expire, startSlotMs);
        else release();
      };
      let timer = setTimeout(expire, startSlotMs);
      this.start(accepted, release);
    }
  }

  private start(accepted: Accepted, release: () => void, member: Member | null = null): void {
    const { conn } = accepted;
    let config: ClientConfig;
    try {
      config = this.options.configFor(conn);
    } catch (err) {
      // A variant that cannot be written (the data dir is full): this client is refused, the daemon lives on.
      const reason = `cannot write the nbd-server config for ${conn.clientAddress}: ${(err as Error).message}`;
      this.refuseUnstarted(accepted, reason, err as Error, release);
      return;
    }
    if (member === null) return this.spawnFor(accepted, config, release);
    void this.options.pool!.handOff(member, accepted.socket, config).then((child) => {
      if (child !== null) {
        this.watch(accepted, child, release);
        // Cut while the hand-off was under way: the bound counts from accept, whichever way the process came.
        if (accepted.expired) killProcess(child.pid!);
        return;
      }
      if (accepted.expired) {
        release();
        closeSocket(accepted.socket);
        this.options.table.close(conn, { outcome: 'not-served', error: noExportChosen(this.options.negotiationTimeoutMs) });
        return;
      }
      if (this.flushed) return this.spawnFor(accepted, config, release);
      // Back at the head of the line: it takes a start slot, or another ready pool process, like any client.
      release();
      this.waiting.unshift(accepted);
      this.startWaiting();
    });
  }

  /** Today's start, and the fallback of any hand-off that fails: a process of its own for this client. */
  private spawnFor(accepted: Accepted, config: ClientConfig, release: () => void): void {
    const { bin } = this.options;
    const { socket } = accepted;
    let child: ChildProcess;
    try {
      child = spawn(bin, ['-d', '-C', config.path], {
        // reportFd, then each export's image from firstExportFd on, in the order its config names them.
        stdio: [socket, socket, 'pipe', 'pipe', ...config.fds],
        detached: true,
        env: this.options.env(),
      });
    } catch (err) {
      this.spawnFailed(accepted, err as NodeJS.ErrnoException, release);
      return;
    }
    if (child.pid === undefined) {
      // Node reports EMFILE, EAGAIN, ENOENT... through 'error' on the next tick, and may have set up no stdio at all.
      child.on('error', (err) => this.spawnFailed(accepted, err, release));
      return;
    }
    this.watch(accepted, child, release);
  }

  /** From here a spawned process and a handed pool process are the same: the connection's, until it ends. */
  private watch(accepted: Accepted, child: ChildProcess, release: () => void): void {
    const { table, log } = this.options;
    const { socket, conn } = accepted;
    // The child holds its own copy of the socket; ours would only keep the client waiting.
    closeSocket(socket);
    child.unref();
    // A started child can still emit 'error' (a failed signal, say); unheard, it would end the daemon.
    child.on('error', (err) => log.warn('nbd-server process error', { connection: conn.id, pid: child.pid, error: errorText(err) }));

    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-stderrKeepBytes);
    });
    let refused = false;
    let rejectionLogged = false;
    answerReports(child.stdio[reportFd] as Duplex, {
      judge: (report) => this.options.admit(conn, report),
      answered: (report, lineBytes) => {
        conn.reportBytes += lineBytes;
        if (report.admitted) {
          clearTimeout(accepted.deadline);
          table.negotiated(conn, report);
          this.options.onNegotiated();
        } else {
          refused = true;
        }
        release();
      },
      ended: (reportedBytes) => table.ending(conn, reportedBytes),
      rejected: (text, closed) => {
        release();
        // Once per connection: a process writing junk must not flood the log.
        if (rejectionLogged) return;
        rejectionLogged = true;
        log.warn(closed ? 'closed the report pipe of a serving process that wrote too much to it' : 'ignored a line on the report pipe', {
          connection: conn.id,
          pid: child.pid,
          text,
        });
      },
    });
    table.attachProcess(conn, child.pid!);
    log.debug('nbd-server started', { connection: conn.id, pid: child.pid, client: conn.clientAddress });

    child.on('close', (exitCode, signal) => {
      release();
      clearTimeout(accepted.deadline);
      const end = {
        exitCode,
        signal,
        stderr,
        killRequested: conn.killRequested,
        negotiated: hasChosen(conn),
        refused,
        expired: accepted.expired,
      };
      const { outcome, error, nbdServerFailed } = classifyClose(end, this.options.negotiationTimeoutMs);
      const summarised = nbdServerFailed !== undefined && !this.options.onStartFailed(conn, nbdServerFailed);
      table.close(conn, { outcome, exitCode, signal, error, summarised });
    });
  }

  /** A spawn that failed: a shortage is the machine's, anything else makes nbd-server unhealthy. */
  private spawnFailed(accepted: Accepted, err: NodeJS.ErrnoException, release: () => void): void {
    const shortage = describeShortage(err);
    if (shortage !== null) return this.refuseUnstarted(accepted, `cannot start nbd-server: ${shortage}`, err, release);
    const reason = `cannot run ${this.options.bin}: ${err.message}`;
    const news = this.options.onStartFailed(accepted.conn, reason);
    this.closeUnstarted(accepted, reason, release, !news);
  }

  /** nbd-server is not at fault, so its health stays as it was; the connection's record and the log say why. */
  private refuseUnstarted(accepted: Accepted, reason: string, err: Error, release: () => void): void {
    this.closeUnstarted(accepted, reason, release);
    this.options.log.warn('cannot start nbd-server for a client', {
      connection: accepted.conn.id,
      client: accepted.conn.clientAddress,
      error: errorText(err),
    });
  }

  /** One client refused, whatever the cause: a failed start never takes the daemon down. */
  private closeUnstarted({ socket, conn, deadline }: Accepted, reason: string, release: () => void, summarised = false): void {
    clearTimeout(deadline);
    closeSocket(socket);
    release();
    this.options.table.close(conn, { outcome: 'failed', error: reason, summarised });
  }
}

/** A release may be reached from several ends of a start (answered, rejected, closed): it counts once. */
function onlyOnce(release: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    release();
  };
}

function closeSocket(socket: net.Socket): void {
  socket.on('error', () => {});
  socket.destroy();
}
