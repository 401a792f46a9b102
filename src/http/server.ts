import http from 'node:http';
import type net from 'node:net';
import { getTRPCErrorFromUnknown } from '@trpc/server';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { refusalCode, refusalHeaders } from '../auth/caller.js';
import type { AuthGate } from '../auth/gate.js';
import { login, loginPage, logout } from './login.js';
import type { BootRoutes } from './boot-routes.js';
import type { Config } from '../config.js';
import { AllowedHosts } from './allowed-hosts.js';
import { httpConnectionLimit, limitConnections } from './connection-limits.js';
import { answerExpectContinue } from './expect-continue.js';
import { screenRequest } from './request-screen.js';
import { sendJsonError } from './reply.js';
import { errorText, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { maxBodyBytes } from './body.js';
import { handleRest } from './rest.js';
import { adapterOptions, contextFactory } from '../router/context.js';
import type { Services } from '../router/trpc.js';
import { serveWeb } from './static-web.js';
import { attachWebSocket } from './websocket.js';

/** Served without authentication: health for monitors, and the stylesheet of the login page. */
const openPaths = new Set(['/healthz', '/style.css']);

export interface HttpServer {
  address: net.AddressInfo;
  /** Stops accepting, lets in-flight requests finish, then resolves. */
  close(): Promise<void>;
}

/** One port for everything a person or program asks of nbdmux: tRPC over HTTP and WebSocket, REST, the dashboard. */
export async function startHttpServer(options: {
  config: Pick<
    Config,
    | 'port'
    | 'bind'
    | 'allowedHosts'
    | 'maxHttpConnections'
    | 'maxHttpPerClient'
    | 'httpRequestTimeout'
    | 'maxConnections'
    | 'maxWebSockets'
    | 'maxWebSocketsPerClient'
  >;
  services: Services;
  metrics: Metrics;
  gate: AuthGate;
  /** Open without authentication, to the machines the NBD port serves. */
  boot: BootRoutes;
  log: Logger;
}): Promise<HttpServer> {
  const { config, services, metrics, gate, boot, log } = options;
  const { port, bind } = config;
  const createContext = contextFactory(services, (req) => gate.caller(req));
  const trpc = createHTTPHandler({
    ...adapterOptions(createContext, log),
    basePath: '/trpc/',
    maxBodySize: maxBodyBytes,
    // A refused caller's answer says how to authenticate, or when to try again, as on every other path.
    responseMeta: ({ ctx, errors }) => {
      const refusal = ctx?.caller.ok === false ? ctx.caller : undefined;
      return refusal && errors.some((error) => error.code === refusalCode(refusal)) ? { headers: refusalHeaders(refusal) } : {};
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
  // Every failure is answered inside (the catch below), so the promise never rejects.
  const server = http.createServer(serverOptions, (req, res) => void answer(req, res));
  async function answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const screening = screenRequest(req, hosts);
    if (!screening.ok) return sendJsonError(res, '', screening.status, screening.code, screening.message);
    const { url } = screening;
    try {
      if (method === 'POST' && url.pathname === '/login') return await login(gate, req, res);
      if (method === 'POST' && url.pathname === '/logout') return logout(gate, req, res);
      if (await boot(req, res, url)) return;
      // Every procedure checks its caller itself (authedProcedure), before reading any input.
      if (url.pathname.startsWith('/trpc/')) return trpc(req, res);
      if (!openPaths.has(url.pathname)) {
        // Checked here too, not only by the procedures a REST route calls: before a body is read, and for the dashboard's files.
        const caller = gate.caller(req);
        if (!caller.ok) {
          if (url.pathname === '/' && caller.status === 401) return loginPage(res);
          return sendJsonError(res, url.pathname, caller.status, refusalCode(caller), caller.message, refusalHeaders(caller));
        }
      }
      if (await handleRest(req, res, url, { services, createContext, metrics }, log)) return;
      if (await serveWeb(req, res, url.pathname)) return;
      sendJsonError(res, url.pathname, 404, 'NOT_FOUND', `nothing at ${url.pathname}; see GET /exports`);
    } catch (cause) {
      // A refusal thrown on the way (a body too large, cut off by the timeout) keeps its status; anything else is ours.
      const error = getTRPCErrorFromUnknown(cause);
      if (error.code !== 'INTERNAL_SERVER_ERROR')
        return sendJsonError(res, url.pathname, getHTTPStatusCodeFromError(error), error.code, error.message);
      log.error('request failed', { method, path: url.pathname, error: errorText(cause) });
      sendJsonError(res, url.pathname, 500, 'INTERNAL_SERVER_ERROR', 'internal error; the daemon log has the details');
    }
  }

  answerExpectContinue(server);
  limitConnections(
    server,
    { total: httpConnectionLimit(config.maxHttpConnections, config.maxConnections, log), perClient: config.maxHttpPerClient },
    log,
  );
  const webSocket = attachWebSocket(
    server,
    createContext,
    gate,
    hosts,
    { total: config.maxWebSockets, perClient: config.maxWebSocketsPerClient },
    log,
  );

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = `${bind ?? 'all addresses'} port ${port}`;
      reject(
        new Error(err.code === 'EADDRINUSE' ? `HTTP port already in use: ${where}` : `cannot listen for HTTP on ${where}: ${err.message}`),
      );
    });
    server.listen({ port, host: bind }, () => resolve());
  });
  // Once listening, a failed accept (EMFILE, ENFILE) is an 'error' event: without this listener it would end the process.
  server.on('error', (err) => log.warn('cannot accept an HTTP connection', { error: errorText(err) }));

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
