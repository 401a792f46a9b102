import fs from 'node:fs';
import type http from 'node:http';
import type net from 'node:net';
import type { Logger } from '../log.js';
import { clientAddressOf } from '../rules/client-address.js';

/** Descriptors the daemon needs besides HTTP and NBD connections: database, listeners, logs, nbd-server starts in progress. */
const reservedDescriptors = 128;
/** The stderr and prerun-report pipes the daemon holds to each live connection's nbd-server. */
const descriptorsPerNbdConnection = 2;
/** The fewest HTTP connections worth serving, whatever the descriptor limit says. */
const minimumHttpConnections = 16;
const warnEveryMs = 60_000;

export interface ConnectionLimits {
  total: number;
  perClient: number;
}

/**
 * How many HTTP connections may be open at once: what the operator asked for, lowered so that
 * HTTP can never take the descriptors NBD connections need (running out makes accept fail).
 */
export function httpConnectionLimit(requested: number, nbdMaxConnections: number, log: Logger): number {
  const descriptors = openFilesLimit();
  if (descriptors === null) return requested;
  const fits = Math.max(minimumHttpConnections, descriptors - reservedDescriptors - nbdMaxConnections * descriptorsPerNbdConnection);
  if (fits >= requested) return requested;
  log.warn('the open-files limit lowers the HTTP connection limit; raise it (ulimit -n, LimitNOFILE=) to allow more', {
    openFilesLimit: descriptors,
    requested,
    httpConnections: fits,
  });
  return fits;
}

/** The soft RLIMIT_NOFILE of this process (Node raises it to the hard limit at start); null where /proc cannot tell. */
function openFilesLimit(): number | null {
  try {
    const line = /^Max open files\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return line ? Number(line[1]) : null;
  } catch {
    return null;
  }
}

/**
 * Caps open connections per client address and in total. At the total cap a newcomer takes the
 * place of the oldest idle connection (no request in progress, not a WebSocket), so idle or
 * half-sent connections can never lock out a monitor's /healthz; it is refused (503) only when
 * every connection is busy.
 */
export function limitConnections(server: http.Server, limits: ConnectionLimits, log: Logger): void {
  const open = new Map<net.Socket, { client: string; busy: boolean }>(); // insertion order: oldest first
  const perClient = new Map<string, number>();
  let lastWarning = -Infinity;

  const refuse = (socket: net.Socket, reason: string, fields: Record<string, unknown>) => {
    if (Date.now() - lastWarning >= warnEveryMs) {
      lastWarning = Date.now();
      log.warn('refusing HTTP connections (logged once a minute)', { reason, ...fields });
    }
    const body = `${reason}\n`;
    const head = `HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
    socket.end(head + body, () => socket.destroy());
  };

  const evictOldestIdle = (): boolean => {
    for (const [socket, state] of open) {
      if (state.busy) continue;
      socket.destroy();
      open.delete(socket);
      return true;
    }
    return false;
  };

  server.on('connection', (socket: net.Socket) => {
    const client = clientAddressOf(socket);
    const fromClient = perClient.get(client) ?? 0;
    if (fromClient >= limits.perClient) {
      return refuse(socket, `too many connections from ${client}: close idle ones (limit --max-http-per-client ${limits.perClient})`, {
        client,
      });
    }
    if (open.size >= limits.total && !evictOldestIdle()) {
      return refuse(socket, `every HTTP connection is busy: try again shortly (limit --max-http-connections ${limits.total})`, { client });
    }
    open.set(socket, { client, busy: false });
    perClient.set(client, fromClient + 1);
    socket.once('close', () => {
      open.delete(socket);
      const left = perClient.get(client)! - 1;
      if (left === 0) perClient.delete(client);
      else perClient.set(client, left);
    });
  });

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const state = open.get(req.socket);
    if (!state) return;
    state.busy = true;
    res.once('close', () => (state.busy = false));
  });
  server.on('upgrade', (req: http.IncomingMessage) => {
    const state = open.get(req.socket);
    if (state) state.busy = true;
  });
}
