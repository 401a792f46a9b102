import type http from 'node:http';
import { getTRPCErrorFromUnknown } from '@trpc/server';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { describeError } from '../errors.js';
import { errorText, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { exportRoutes } from './rest-exports.js';
import { machineRoutes } from './rest-machines.js';
import { profilePowerRoutes, profileRoutes } from './rest-profiles.js';
import { routeMethods, type Reply, type RestRoute, type RouteRequest } from './rest-route.js';
import type { CreateContext } from '../router/context.js';
import { createCaller } from '../router/index.js';
import type { Services } from '../router/trpc.js';

/**
 * curl-friendly routes over the same procedures as tRPC (validation, rules and errors included):
 * each route only translates HTTP to a procedure call and the result back.
 */
export async function handleRest(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  url: URL,
  { services, createContext, metrics }: { services: Services; createContext: CreateContext; metrics: Metrics },
  log: Logger,
): Promise<boolean> {
  const route = matchRoute(url.pathname);
  if (!route) return false;
  const method = req.method ?? 'GET';
  let reply: Reply;
  try {
    if (!route.methods.includes(method)) {
      reply = {
        status: 405,
        json: { error: { code: 'METHOD_NOT_SUPPORTED', message: `${method} is not supported here; use ${route.methods.join(', ')}` } },
        headers: { allow: route.methods.join(', ') },
      };
    } else {
      reply = await route.handle(method, { req, url, services, metrics, procedures: () => createCaller(createContext({ req })) });
    }
  } catch (cause) {
    const error = getTRPCErrorFromUnknown(cause);
    const failure = error.cause ?? error;
    if (error.code === 'INTERNAL_SERVER_ERROR') log.error('request failed', { method, path: url.pathname, error: errorText(failure) });
    reply = { status: getHTTPStatusCodeFromError(error), json: { error: describeError(error) } };
    if (reply.status === 413 || reply.status === 415) {
      // A body we refused must not be parsed as the next request; reading it to the end (and
      // discarding it) lets the client receive this answer instead of a reset.
      reply.headers = { connection: 'close' };
      req.resume();
    }
  }
  send(res, reply);
  return true;
}

interface Route {
  methods: string[];
  handle(method: string, request: RouteRequest): Promise<Reply>;
}

function matchRoute(pathname: string): Route | null {
  for (const { route, regex, methods } of matchers) {
    const match = regex.exec(pathname);
    if (match) return { methods, handle: (method, request) => route.handle(method, request, match[1] ?? '') };
  }
  return null;
}

export const restRoutes: readonly RestRoute[] = [
  ...exportRoutes,
  ...machineRoutes,
  ...profileRoutes,
  ...profilePowerRoutes,
  {
    path: '/healthz',
    docs: {
      GET: [
        {
          returns:
            '200 `ok` when the NBD listener accepts, nbd-server can serve and the data dir has space; 503 and the reasons otherwise. Open: no authentication',
        },
      ],
    },
    // Open to monitors, so it asks the data plane itself: every procedure wants an authenticated caller.
    async handle(_method, { services }) {
      const health = await services.dataPlane.health();
      return health.ok ? { status: 200, text: 'ok\n' } : { status: 503, text: `${health.problems.join('\n')}\n` };
    },
  },
  {
    path: '/metrics',
    docs: { GET: [{ returns: '200, metrics in the Prometheus text format (see [monitoring](../deploy.md#monitoring-get-metrics))' }] },
    // For Prometheus; the server has checked the caller (a bearer, as Prometheus sends) before any route runs.
    async handle(_method, { metrics }) {
      return { status: 200, text: await metrics.scrape(), headers: { 'content-type': metrics.contentType } };
    },
  },
];

const matchers = restRoutes.map((route) => {
  const pattern = route.path.replace(/\{[a-z]+\}/g, '([^/]+)') + (route.trailingSlash ? '/?' : '');
  return { route, regex: new RegExp(`^${pattern}$`), methods: routeMethods(route) };
});

function send(res: http.ServerResponse, { status, json, text, headers = {} }: Reply): void {
  const body = json !== undefined ? `${JSON.stringify(json)}\n` : (text ?? '');
  res.writeHead(status, {
    ...(status !== 204 && { 'content-type': json !== undefined ? 'application/json' : 'text/plain; charset=utf-8' }),
    ...headers,
    'cache-control': 'no-store',
  });
  res.end(status === 204 ? undefined : body);
}
