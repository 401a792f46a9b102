import http from 'node:http';
import type net from 'node:net';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import type { Logger } from './log.js';
import { maxBodyBytes } from './rest/json-body.js';
import { handleRest } from './rest/routes.js';
import { appRouter, type Context } from './router/index.js';
import { serveWeb } from './web.js';
import { attachWebSocket } from './websocket.js';

export interface HttpServer {
  address: net.AddressInfo;
  /** Stops accepting, lets in-flight requests finish, then resolves. */
  close(): Promise<void>;
}

/** One port for everything a person or program asks of nbdmux: tRPC over HTTP and WebSocket, REST, the dashboard. */
export async function startHttpServer(options: { port: number; bind: string | undefined; context: Context; log: Logger }): Promise<HttpServer> {
  const { port, bind, context, log } = options;
  const trpc = createHTTPHandler({
    router: appRouter,
    basePath: '/trpc/',
    maxBodySize: maxBodyBytes,
    createContext: () => context,
    onError: ({ error, path }) => {
      if (error.code === 'INTERNAL_SERVER_ERROR') log.error('procedure failed', { path, error: String(error.cause ?? error) });
    },
  });

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://nbdmux.invalid');
    try {
      if (url.pathname.startsWith('/trpc/')) return trpc(req, res);
      if (await handleRest(req, res, url, context, log)) return;
      if (await serveWeb(req, res, url.pathname)) return;
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify({ error: { code: 'NOT_FOUND', message: `nothing at ${url.pathname}; see GET /exports` } })}\n`);
    } catch (err) {
      log.error('request failed', { method: req.method, path: url.pathname, error: String(err) });
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify({ error: { code: 'INTERNAL_SERVER_ERROR', message: 'internal error; the daemon log has the details' } })}\n`);
    }
  });

  const webSocket = attachWebSocket(server, context, log);

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = `${bind ?? 'all addresses'} port ${port}`;
      reject(new Error(err.code === 'EADDRINUSE' ? `HTTP port already in use: ${where}` : `cannot listen for HTTP on ${where}: ${err.message}`));
    });
    server.listen({ port, host: bind }, () => resolve());
  });

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
