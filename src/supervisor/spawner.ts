import { spawn } from 'node:child_process';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.js';
import type { ClientConfig } from './config-variants.js';
import type { ConnectionTable, LiveConnection } from './connections.js';
import { reportFd } from './nbd-config.js';
import { isOnCpu } from './proc.js';

/**
 * Ways a client ends a session before choosing an export (listing, an unknown name, a port
 * scan). They say nothing about nbd-server's health; any other early exit does.
 */
const clientEndedEarly = /terminated by client|Negotiation failed|Connection dropped|Connection reset|Read failed|Write failed|Broken pipe/;

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
  table: ConnectionTable;
  log: Logger;
  onStartFailed: (conn: LiveConnection, reason: string) => void;
  onNegotiated: () => void;
  /** Whether this client may use the export it chose (its allow list); a refusal is the caller's to record. */
  admit: (conn: LiveConnection, exportId: number) => boolean;
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
  private readonly waiting: Array<{ socket: net.Socket; conn: LiveConnection }> = [];

  constructor(private readonly options: SpawnerOptions) {}

  enqueue(socket: net.Socket, conn: LiveConnection): void {
    this.waiting.push({ socket, conn });
    this.startWaiting();
  }

  /** At shutdown: start everyone still waiting at once, so no accepted client is dropped. */
  flush(): void {
    for (const { socket, conn } of this.waiting.splice(0)) this.start(socket, conn, () => {});
  }

  private startWaiting(): void {
    while (this.starting < this.options.maxConcurrentStarts && this.waiting.length > 0) {
      const { socket, conn } = this.waiting.shift()!;
      this.starting++;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        clearTimeout(timer);
        this.starting--;
        this.startWaiting();
      };
      const expire = () => {
        if (conn.pid !== null && isOnCpu(conn.pid)) timer = setTimeout(expire, startSlotMs);
        else release();
      };
      let timer = setTimeout(expire, startSlotMs);
      this.start(socket, conn, release);
    }
  }

  private start(socket: net.Socket, conn: LiveConnection, release: () => void): void {
    const { bin, table, log } = this.options;
    let config: ClientConfig;
    try {
      config = this.options.configFor(conn);
    } catch (err) {
      // A variant that cannot be written (disk full): this client is refused, the daemon lives on.
      socket.on('error', () => {});
      socket.destroy();
      release();
      const reason = `cannot write the nbd-server config for ${conn.clientAddress}: ${(err as Error).message}`;
      table.close(conn, { outcome: 'failed', error: reason });
      this.options.onStartFailed(conn, reason);
      return;
    }
    const child = spawn(bin, ['-d', '-C', config.path], {
      // reportFd, then each export's image from firstExportFd on, in the order its config names them.
      stdio: [socket, socket, 'pipe', 'pipe', ...config.fds],
      detached: true,
      env: this.options.env(),
    });
    // The child holds its own copy of the socket; ours would only keep the client waiting.
    socket.on('error', () => {});
    socket.destroy();
    child.unref();

    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-stderrKeepBytes);
    });
    let refused = false;
    const report = child.stdio[reportFd] as Duplex;
    report.on('data', (chunk: Buffer) => {
      const exportId = Number.parseInt(chunk.toString('utf8').trim(), 10);
      if (Number.isSafeInteger(exportId)) {
        // Every report gets a verdict; only the prerun of an export with an allow list reads it.
        const admitted = this.options.admit(conn, exportId);
        report.write(admitted ? 'allow\n' : 'deny\n');
        if (admitted) {
          table.negotiated(conn, exportId);
          this.options.onNegotiated();
        } else {
          refused = true;
        }
      }
      release();
    });
    report.on('error', () => {});
    if (child.pid !== undefined) {
      table.attachProcess(conn, child.pid);
      log.debug('nbd-server started', { connection: conn.id, pid: child.pid, client: conn.clientAddress });
    }

    // A failed spawn can report through both 'error' and 'close': act on the first only.
    let ended = false;
    child.on('error', (err) => {
      release();
      if (ended) return;
      ended = true;
      const reason = `cannot run ${bin}: ${err.message}`;
      table.close(conn, { outcome: 'failed', error: reason });
      this.options.onStartFailed(conn, reason);
    });
    child.on('close', (exitCode, signal) => {
      release();
      if (ended) return;
      ended = true;
      const error = lastLine(stderr);
      if (conn.killRequested) {
        table.close(conn, { outcome: 'killed', exitCode, signal, error });
      } else if (conn.exportId !== null) {
        table.close(conn, { outcome: 'closed', exitCode, signal, error });
      } else if (refused) {
        table.close(conn, { outcome: 'not-served', exitCode, signal, error: 'refused by the export allow list' });
      } else if (exitCode === 0 || signal === 'SIGPIPE' || clientEndedEarly.test(stderr)) {
        table.close(conn, { outcome: 'not-served', exitCode, signal, error });
      } else {
        const reason = exitedBeforeServing(exitCode, signal, stderr);
        table.close(conn, { outcome: 'failed', exitCode, signal, error });
        this.options.onStartFailed(conn, reason);
      }
    });
  }
}

/** Why an nbd-server ended before it served anyone, as the operator should read it. */
export function exitedBeforeServing(exitCode: number | null, signal: NodeJS.Signals | null, stderr: string): string {
  return `nbd-server exited before serving (${signal ?? `exit ${exitCode}`}): ${lastLine(stderr) ?? 'no message'}`;
}

/** nbd-server's last word on stderr, without the "Exiting." it ends every error with. */
function lastLine(text: string): string | null {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && line !== 'Exiting.');
  return lines.at(-1) ?? null;
}
