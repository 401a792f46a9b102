import { spawn } from 'node:child_process';
import type net from 'node:net';
import type { Logger } from '../log.js';
import type { ConnectionTable, LiveConnection } from './connections.js';
import { reportFd } from './nbd-config.js';

/**
 * Ways a client ends a session before choosing an export (listing, an unknown name, a port
 * scan). They say nothing about nbd-server's health; any other early exit does.
 */
const clientEndedEarly = /terminated by client|Negotiation failed|Connection dropped|Connection reset|Read failed|Write failed|Broken pipe/;

/** A start counts against the bound until the export is chosen, the process ends, or this long. */
const startSlotMs = 3000;
const stderrKeepBytes = 2048;

export interface SpawnerOptions {
  bin: string;
  configPath: string;
  maxConcurrentStarts: number;
  table: ConnectionTable;
  log: Logger;
  onStartFailed: (conn: LiveConnection, reason: string) => void;
  onNegotiated: () => void;
}

/**
 * Runs one nbd-server per connection in inetd mode (the accepted socket as its stdin and
 * stdout), a few starts at a time: each start burns CPU on TLS parameters, so a boot storm
 * waits in line instead of thrashing. Processes run in their own session so that they outlive
 * nbdmux: a netbooted machine must not lose its root disk when the daemon restarts.
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
      const timer = setTimeout(release, startSlotMs);
      this.start(socket, conn, release);
    }
  }

  private start(socket: net.Socket, conn: LiveConnection, release: () => void): void {
    const { bin, configPath, table, log } = this.options;
    const child = spawn(bin, ['-d', '-C', configPath], {
      stdio: [socket, socket, 'pipe', 'pipe'],
      detached: true,
    });
    // The child holds its own copy of the socket; ours would only keep the client waiting.
    socket.on('error', () => {});
    socket.destroy();
    child.unref();

    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-stderrKeepBytes);
    });
    child.stdio[reportFd]!.on('data', (chunk: Buffer) => {
      const exportId = Number.parseInt(chunk.toString('utf8').trim(), 10);
      if (Number.isSafeInteger(exportId)) {
        table.negotiated(conn, exportId);
        this.options.onNegotiated();
      }
      release();
    });
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
      } else if (exitCode === 0 || signal === 'SIGPIPE' || clientEndedEarly.test(stderr)) {
        table.close(conn, { outcome: 'not-served', exitCode, signal, error });
      } else {
        const reason = `nbd-server exited before serving (${signal ?? `exit ${exitCode}`}): ${error ?? 'no message'}`;
        table.close(conn, { outcome: 'failed', exitCode, signal, error });
        this.options.onStartFailed(conn, reason);
      }
    });
  }
}

function lastLine(text: string): string | null {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && line !== 'Exiting.');
  return lines.at(-1) ?? null;
}
