import http from 'node:http';
import type net from 'node:net';
import { getTRPCErrorFromUnknown } from '@trpc/server';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { loginPage, type AuthGate } from './auth/gate.js';
import { hasOwnOrigin } from './auth/origin.js';
import type { BootRoutes } from './boot/routes.js';
import type { Config } from './config.js';
import { AllowedHosts } from './http/allowed-hosts.js';
import { httpConnectionLimit, limitConnections } from './http/connection-limits.js';
import { screenRequest } from './http/request-screen.js';
import { sendJsonError } from './http-reply.js';
import type { Logger } from './log.js';
import { maxBodyBytes } from './rest/body.js';
import { handleRest } from './rest/routes.js';
import { appRouter, type Context } from './router/index.js';
import { serveWeb } from './web.js';
import { attachWebSocket } from './websocket.js';

/** Served without authentication: health for monitors, and the stylesheet of the login page. */
const openPaths = new Set(['/healthz', '/style.css']);
const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

export interface HttpServer {
  address: net.AddressInfo;
  /** Stops accepting, lets in-flight requests finish, then resolves. */
  close(): Promise<void>;
}

/** One port for everything a person or program asks of nbdmux: tRPC over HTTP and WebSocket, REST, the dashboard. */
export async function startHttpServer(options: {
  config: Pick<Config, 'port' | 'bind' | 'allowedHosts' | 'maxHttpConnections' | 'maxHttpPerClient' | 'httpRequestTimeout' | 'maxConnections'>;
  context: Context;
  gate: AuthGate;
  /** Open without authentication, to the machines the NBD port serves. */
  boot: BootRoutes;
  log: Logger;
}): Promise<HttpServer> {
  const { config, context, gate, boot, log } = options;
  const { port, bind } = config;
  const trpc = createHTTPHandler({
    router: appRouter,
    basePath: '/trpc/',
    maxBodySize: maxBodyBytes,
    createContext: () => context,
    onError: ({ error, path }) => {
      if (error.code === 'INTERNAL_SERVER_ERROR') log.error('procedure failed', { path, error: String(error.cause ?? error) });
    },
  });

  const hosts = new AllowedHosts(bind, config.allowedHosts);
  const requestTimeoutMs = config.httpRequestTimeout * 1000;
  const serverOptions: http.ServerOptions = {
    // However slowly a client trickles its headers and body, it gets this long for both; Node
    // looks for overdue requests every connectionsCheckingInterval, so that bounds how late the cut comes.
    headersTimeout: requestTimeoutMs,
    requestTimeout: requestTimeoutMs,
    connectionsCheckingInterval: Math.min(1000, requestTimeoutMs),
  };
  const server = http.createServer(serverOptions, async (req, res) => {
    const method = req.method ?? 'GET';
    const screening = screenRequest(req, hosts);
    if (!screening.ok) return sendJsonError(res, '', screening.status, screening.code, screening.message);
    const { url } = screening;
    try {
      if (method === 'POST' && url.pathname === '/login') return await gate.login(req, res);
      if (method === 'POST' && url.pathname === '/logout') return gate.logout(req, res);
      if (await boot(req, res, url)) return;
      if (!openPaths.has(url.pathname)) {
        const verdict = gate.check(req);
        if (!verdict.ok) {
          if (url.pathname === '/' && verdict.status === 401) return loginPage(res);
          const headers: Record<string, string> = verdict.status === 429 ? { 'retry-after': String(verdict.retryAfterSeconds) } : { 'www-authenticate': 'Bearer realm="nbdmux"' };
          return sendJsonError(res, url.pathname, verdict.status, verdict.status === 429 ? 'TOO_MANY_REQUESTS' : 'UNAUTHORIZED', verdict.message, headers);
        }
        // A browser sends the cookie with requests any site makes; only our own pages may act with it.
        if (verdict.identity.via === 'cookie' && !safeMethods.has(method) && !hasOwnOrigin(req)) {
          return sendJsonError(res, url.pathname, 403, 'FORBIDDEN', 'cross-site request refused: act from the nbdmux dashboard itself');
        }
      }
      if (url.pathname.startsWith('/trpc/')) return trpc(req, res);
      if (await handleRest(req, res, url, context, log)) return;
      if (await serveWeb(req, res, url.pathname)) return;
      sendJsonError(res, url.pathname, 404, 'NOT_FOUND', `nothing at ${url.pathname}; see GET /exports`);
    } catch (cause) {
      // A refusal thrown on the way (a body too large, cut off by the timeout) keeps its status; anything else is ours.
      const error = getTRPCErrorFromUnknown(cause);
      if (error.code !== 'INTERNAL_SERVER_ERROR') return sendJsonError(res, url.pathname, getHTTPStatusCodeFromError(error), error.code, error.message);
      log.error('request failed', { method, path: url.pathname, error: (cause as Error).stack ?? String(cause) });
      sendJsonError(res, url.pathname, 500, 'INTERNAL_SERVER_ERROR', 'internal error; the daemon log has the details');
    }
  });

  limitConnections(server, { total: httpConnectionLimit(config.maxHttpConnections, config.maxConnections, log), perClient: config.maxHttpPerClient }, log);
  const webSocket = attachWebSocket(server, context, gate, hosts, log);

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = `${bind ?? 'all addresses'} port ${port}`;
      reject(new Error(err.code === 'EADDRINUSE' ? `HTTP port already in use: ${where}` : `cannot listen for HTTP on ${where}: ${err.message}`));
    });
    server.listen({ port, host: bind }, () => resolve());
  });
  // Once listening, a failed accept (EMFILE, ENFILE) is an 'error' event: without this listener it would end the process.
  server.on('error', (err) => log.warn('cannot accept an HTTP connection', { error: err.stack ?? String(err) }));

  return {
    address: server.address() as net.AddressInfo,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await webSocket.close();
      await closed;
    },
  };
}
