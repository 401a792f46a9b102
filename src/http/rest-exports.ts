import type http from 'node:http';
import { badInput } from '../errors.js';
import { contentType, readJsonBody } from './body.js';
import type { RestRoute } from './rest-route.js';
import { decodeName, withPathField } from './rest-paths.js';

/** The exports, their versions and rollback: routes over the exports.* procedures. */
export const exportRoutes: readonly RestRoute[] = [
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
];

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
