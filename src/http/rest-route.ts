import type http from 'node:http';
import type { Metrics } from '../metrics.js';
import type { createCaller } from '../router/index.js';
import type { Services } from '../router/trpc.js';

type Procedures = ReturnType<typeof createCaller>;
export type Reply = { status: number; json?: unknown; text?: string; headers?: Record<string, string> };

/** What a route works with: the procedures as this request's caller may call them, or (for /healthz) the services directly. */
export interface RouteRequest {
  req: http.IncomingMessage;
  url: URL;
  procedures: () => Procedures;
  services: Services;
  metrics: Metrics;
}

/** One row of the reference page (docs/reference/rest.md): what a method takes and answers. */
export interface RouteDoc {
  /** Appended to the path in the reference, e.g. `[?force=true]`. */
  query?: string;
  body?: string;
  returns: string;
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/**
 * A route: its path (`{name}` stands for one path part, handed to `handle` decoded by it), what
 * each method does, and the handler. The table below is the one list of routes: the router
 * matches against it and `npm run docs` writes the reference page from it.
 */
export interface RestRoute {
  path: string;
  /** `/exports/` as well as `/exports`. */
  trailingSlash?: boolean;
  docs: Partial<Record<Method, readonly RouteDoc[]>>;
  handle(method: string, request: RouteRequest, part: string): Promise<Reply>;
}

/** The methods a route answers, in the order its docs list them; a GET answers HEAD too. */
export function routeMethods(route: RestRoute): string[] {
  return Object.keys(route.docs).flatMap((method) => (method === 'GET' ? ['GET', 'HEAD'] : [method]));
}
