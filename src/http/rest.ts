import type http from 'node:http';
import { getTRPCErrorFromUnknown } from '@trpc/server';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { badInput, describeError } from '../errors.js';
import { errorText, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { contentType, readJsonBody } from './body.js';
import { profilePowerRoutes } from './rest-fleet.js';
import { decodeName, decodePathPart, withPathField } from './rest-paths.js';
import type { CreateContext } from '../router/context.js';
import { createCaller } from '../router/index.js';
import type { Services } from '../router/trpc.js';

type Procedures = ReturnType<typeof createCaller>;
type Reply = { status: number; json?: unknown; text?: string; headers?: Record<string, string> };

/** What a route works with: the procedures as this request's caller may call them, or (for /healthz) the services directly. */
interface RouteRequest {
  req: http.IncomingMessage;
  url: URL;
  procedures: () => Procedures;
  services: Services;
  metrics: Metrics;
}

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
  {
    path: '/exports',
    trailingSlash: true,
    docs: {
      GET: [{ returns: '200, JSON array of exports (serving, then draining)' }],
      POST: [
        {
          body: '`{name, file, readonly?, cow?, allow?, cmdline?}` (`readonly` defaults to true, `cow` to false, `allow` to `[]`, `cmdline` to `console=tty0 console=ttyS0,115200`)',
          returns: '201, the new export',
        },
        {
          body: '`{name, url, sha256?, readonly?, cow?, allow?, cmdline?}`',
          returns: '202, the export in state `importing` (see [importing images](../images.md#importing-images))',
        },
      ],
    },
    async handle(method, { req, procedures }) {
      if (method === 'POST') {
        const body = await readJsonBody(req);
        const created = await procedures().exports.create(body as never);
        // An import answers before its image exists: accepted, not yet created.
        return { status: isImport(body) ? 202 : 201, json: created, headers: { location: `/exports/${encodeURIComponent(created.name)}` } };
      }
      return { status: 200, json: await procedures().exports.list() };
    },
  },
  {
    path: '/exports/{name}',
    docs: {
      GET: [{ returns: '200, the export being served under that name' }],
      PUT: [
        { body: '`{file}` or `{url, sha256?}`', returns: '200 (file) or 202 (url): a new version (see [versions](../images.md#versions))' },
      ],
      DELETE: [{ query: '[?force=true]', returns: '204; cancels its running imports' }],
    },
    async handle(method, { req, url, procedures }, rawName) {
      const name = decodeName(rawName);
      if (method === 'DELETE') {
        await procedures().exports.delete({ name, force: parseForce(url.searchParams.get('force')) });
        return { status: 204 };
      }
      if (method === 'PUT') {
        const body = await readJsonBody(req);
        return { status: isImport(body) ? 202 : 200, json: await procedures().exports.update(withPathName(body, name)) };
      }
      return { status: 200, json: await procedures().exports.get({ name }) };
    },
  },
  {
    path: '/exports/{name}/versions',
    docs: { GET: [{ returns: '200, its versions, newest first' }] },
    async handle(_method, { procedures }, rawName) {
      return { status: 200, json: await procedures().exports.versions({ name: decodeName(rawName) }) };
    },
  },
  {
    path: '/exports/{name}/rollback',
    docs: { POST: [{ body: '`{version?}` or no body', returns: '200: the previous (or the given) version is current again' }] },
    async handle(_method, { req, procedures }, rawName) {
      // A bare POST rolls back to the previous version: no body, no content type needed.
      const body = contentType(req) === undefined && !hasBody(req) ? {} : await readJsonBody(req);
      return { status: 200, json: await procedures().exports.rollback(withPathName(body, decodeName(rawName))) };
    },
  },
  {
    path: '/machines',
    trailingSlash: true,
    docs: {
      GET: [{ returns: '200, array, without the cloud-init documents (GET /machines/{mac} shows them)' }],
      POST: [
        {
          body: "`{mac, name, profile?, export?, cmdline?, persistent?, stateSize?, userData?, networkConfig?, vendorData?}` (a field left out or null: its profile's, else the default)",
          returns: '201 (409 for a taken MAC or name, 400 for an unknown export or profile, or a malformed field)',
        },
      ],
    },
    async handle(method, { req, procedures }) {
      if (method === 'POST') {
        const created = await procedures().machines.create((await readJsonBody(req)) as never);
        return { status: 201, json: created, headers: { location: `/machines/${created.mac}` } };
      }
      return { status: 200, json: await procedures().machines.list() };
    },
  },
  {
    // Before /machines/{mac}, which would take `discovered` for a MAC.
    path: '/machines/discovered',
    docs: { GET: [{ returns: '200: unknown MACs that asked to boot, newest first' }] },
    async handle(_method, { procedures }) {
      return { status: 200, json: await procedures().machines.discovered() };
    },
  },
  {
    path: '/machines/{mac}',
    docs: {
      GET: [
        {
          returns:
            '200: each field as its next boot gets it, and `sources`: where each came from (machine, profile, default) (404 unknown)',
        },
      ],
      PATCH: [
        {
          body: 'any field but `mac`, and `keepState`; `"profile": null` takes it out of its profile, a shared field null clears its own value',
          returns: '200',
        },
      ],
      DELETE: [{ returns: '204; its state is deleted too (409 while attached)' }],
    },
    async handle(method, { req, procedures }, rawMac) {
      const mac = decodePathPart('mac', rawMac);
      if (method === 'DELETE') {
        await procedures().machines.delete({ mac });
        return { status: 204 };
      }
      if (method === 'PATCH')
        return { status: 200, json: await procedures().machines.update(withPathField(await readJsonBody(req), 'mac', mac, 'machine')) };
      return { status: 200, json: await procedures().machines.get({ mac }) };
    },
  },
  {
    path: '/machines/{mac}/reset',
    docs: { POST: [{ returns: '204: its state is discarded and made anew, empty (409 while attached, or when not persistent)' }] },
    async handle(_method, { procedures }, rawMac) {
      await procedures().machines.reset({ mac: decodePathPart('mac', rawMac) });
      return { status: 204 };
    },
  },
  {
    path: '/profiles',
    trailingSlash: true,
    docs: {
      GET: [{ returns: '200, array: each profile with its machines, without the cloud-init documents (GET /profiles/{name} shows them)' }],
      POST: [
        {
          body: '`{name, export?, cmdline?, persistent?, stateSize?, userData?, networkConfig?, vendorData?}` (a field left out: unset, its machines get the default)',
          returns: '201 (409 for a taken name, 400 for an unknown export or a malformed field)',
        },
      ],
    },
    async handle(method, { req, procedures }) {
      if (method === 'POST') {
        const created = await procedures().profiles.create((await readJsonBody(req)) as never);
        return { status: 201, json: created, headers: { location: `/profiles/${encodeURIComponent(created.name)}` } };
      }
      return { status: 200, json: await procedures().profiles.list() };
    },
  },
  {
    path: '/profiles/{name}',
    docs: {
      GET: [{ returns: '200 (404 unknown)' }],
      PATCH: [
        {
          body: "any field but `name` (null: unset), `allMachines` (also clear its machines' own values of the fields given), `keepState`",
          returns: '200: its machines get it at their next boot',
        },
      ],
      DELETE: [{ returns: '204 (409 naming its machines while it has any)' }],
    },
    async handle(method, { req, procedures }, rawName) {
      const name = decodeName(rawName);
      if (method === 'DELETE') {
        await procedures().profiles.remove({ name });
        return { status: 204 };
      }
      if (method === 'PATCH')
        return { status: 200, json: await procedures().profiles.update(withPathField(await readJsonBody(req), 'name', name, 'profile')) };
      return { status: 200, json: await procedures().profiles.get({ name }) };
    },
  },
  {
    path: '/profiles/{name}/adopt',
    docs: {
      POST: [
        {
          body: '`{names, macs?}`: `names` a pattern like `rack3-node{01..40}`, `macs` the discovered MACs (default: all)',
          returns: '200, `{profile, adopted}`: each named in its order of discovery; all or none (400 too few names, 409 a name taken)',
        },
      ],
    },
    async handle(_method, { req, procedures }, rawName) {
      return {
        status: 200,
        json: await procedures().profiles.adopt(withPathField(await readJsonBody(req), 'name', decodeName(rawName), 'profile')),
      };
    },
  },
  {
    path: '/machines/{mac}/bmc',
    docs: {
      PUT: [
        {
          body: "`{address, port?, user?, password?, cipherSuite?}` (`user` left out or null, `password` null: its profile's)",
          returns:
            '200: how nbdmux reaches its BMC over IPMI, the user and password it uses and `sources`: where each came from (machine, profile, none); the password shown only as "set" or "not set" (a first setting of a machine in no profile must give one)',
        },
      ],
      DELETE: [{ returns: '204: nbdmux forgets its BMC' }],
    },
    async handle(method, { req, procedures }, rawMac) {
      const mac = decodePathPart('mac', rawMac);
      if (method === 'DELETE') {
        await procedures().machines.removeBmc({ mac });
        return { status: 204 };
      }
      return { status: 200, json: await procedures().machines.setBmc(withPathField(await readJsonBody(req), 'mac', mac, 'machine')) };
    },
  },
  {
    path: '/machines/{mac}/power',
    docs: {
      POST: [
        {
          body: '`{action}`: status, on, off, cycle, reset or pxe',
          returns:
            '200 with what the BMC answered; 504 when it did not answer, 502 when it refused the credentials or the command (the message quotes it), 412 without a BMC',
        },
      ],
    },
    async handle(_method, { req, procedures }, rawMac) {
      const mac = decodePathPart('mac', rawMac);
      return { status: 200, json: await procedures().machines.power(withPathField(await readJsonBody(req), 'mac', mac, 'machine')) };
    },
  },
  {
    path: '/machines/{mac}/reimage',
    docs: {
      POST: [
        {
          body: '`{export}`',
          returns:
            '200 `{ok, steps}`: power status, export set, network boot next, cycle (or on); it stops at the first step that fails, before changing anything when the BMC cannot be reached',
        },
      ],
    },
    async handle(_method, { req, procedures }, rawMac) {
      const mac = decodePathPart('mac', rawMac);
      return { status: 200, json: await procedures().machines.reimage(withPathField(await readJsonBody(req), 'mac', mac, 'machine')) };
    },
  },
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

/** The body's fields with the export name the path gives; the procedure's schema judges the rest. */
function withPathName(body: unknown, name: string): never {
  return withPathField(body, 'name', name, 'export');
}

/** A body the procedure accepted with a `url` started an import. */
function isImport(body: unknown): boolean {
  return typeof body === 'object' && body !== null && 'url' in body;
}

function hasBody(req: http.IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

function parseForce(value: string | null): boolean {
  if (value === null || value === 'false') return false;
  if (value === 'true') return true;
  throw badInput('force', `must be true or false (got "${value}")`);
}

function send(res: http.ServerResponse, { status, json, text, headers = {} }: Reply): void {
  const body = json !== undefined ? `${JSON.stringify(json)}\n` : (text ?? '');
  res.writeHead(status, {
    ...(status !== 204 && { 'content-type': json !== undefined ? 'application/json' : 'text/plain; charset=utf-8' }),
    ...headers,
    'cache-control': 'no-store',
  });
  res.end(status === 204 ? undefined : body);
}
