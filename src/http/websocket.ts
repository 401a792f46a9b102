import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import { WebSocketServer } from 'ws';
import type { AuthGate } from '../auth/gate.js';
import type { AllowedHosts } from './allowed-hosts.js';
import { screenRequest } from './request-screen.js';
import { tryAgainLater, WebSocketCaps, type WebSocketLimits } from './websocket-limits.js';
import { errorText, type Logger } from '../log.js';
import { maxBodyBytes } from './body.js';
import { adapterOptions, type CreateContext } from '../router/context.js';
import { clientAddressOf } from '../rules/client-address.js';

export const webSocketPath = '/trpc';
const closeGraceMs = 1000;

/**
 * tRPC over WebSocket on the HTTP server's own port, at /trpc only. Upgrades are routed here
 * rather than by the adapter's prefix option, which leaves a wrong-path socket open.
 */
export function attachWebSocket(
  server: http.Server,
  createContext: CreateContext,
  gate: AuthGate,
  hosts: AllowedHosts,
  limits: WebSocketLimits,
  log: Logger,
): { close(): Promise<void> } {
  const caps = new WebSocketCaps(limits, log);
  const wss = new WebSocketServer({ noServer: true, maxPayload: maxBodyBytes });
  const handler = applyWSSHandler({
    wss,
    ...adapterOptions(createContext, log),
    keepAlive: { enabled: true, pingMs: 30_000, pongWaitMs: 5_000 },
  });

  const upgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const screening = screenRequest(req, hosts);
    if (!screening.ok) return refuse(socket, screening.status, screening.message);
    const { pathname } = screening.url;
    if (pathname !== webSocketPath && pathname !== `${webSocketPath}/`)
      return refuse(socket, 404, `WebSocket is served at ${webSocketPath} only`);
    // Refused before the socket is accepted; the context of the connection then carries the same caller.
    const caller = gate.caller(req);
    if (!caller.ok) return refuse(socket, caller.status, caller.message);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const client = clientAddressOf(req.socket);
      const refusal = caps.admit(client);
      if (refusal !== null) {
        ws.close(tryAgainLater, refusal);
        // A client that never answers the close must not keep its socket.
        setTimeout(() => ws.terminate(), closeGraceMs).unref();
        return;
      }
      ws.once('close', () => caps.release(client));
      if (caller.identity.via === 'cookie') gate.trackSocket(caller.identity.session, ws);
      wss.emit('connection', ws, req);
    });
  };
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    // Node hands an upgrading socket over with no 'error' listener: a client resetting it while we answer would end the process.
    socket.on('error', (err) => log.debug('WebSocket upgrade socket failed', { error: errorText(err) }));
    try {
      upgrade(req, socket, head);
    } catch (err) {
      log.error('WebSocket upgrade failed', { path: req.url, error: errorText(err) });
      refuse(socket, 500, 'internal error; the daemon log has the details');
    }
  });

  return {
    close: async () => {
      // Tell clients to reconnect (to the next daemon), then make sure every socket is gone.
      handler.broadcastReconnectNotification();
      for (const client of wss.clients) {
        client.close(1001, 'nbdmux is stopping');
        setTimeout(() => client.terminate(), closeGraceMs).unref();
      }
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

function refuse(socket: Duplex, status: number, reason: string): void {
  // Destroyed once written: no HTTP timeout covers this socket any more, and a client that never closes its side would keep it.
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(reason) + 1}\r\n\r\n${reason}\n`,
    () => socket.destroy(),
  );
}
