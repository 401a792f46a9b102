import type http from 'node:http';
import type { TRPC_ERROR_CODE_KEY } from '@trpc/server/rpc';
import { hostOfHeader, type AllowedHosts } from './allowed-hosts.js';

export type Screening = { ok: true; url: URL } | { ok: false; status: 400 | 421; code: TRPC_ERROR_CODE_KEY; message: string };

/**
 * The first look at every request and WebSocket upgrade, before authentication or routing:
 * its Host must name this daemon, and its target must be a path. Nothing here throws, so hostile
 * input gets an answer instead of reaching a handler half-parsed.
 */
export function screenRequest(req: http.IncomingMessage, hosts: AllowedHosts): Screening {
  const hostHeaders = req.rawHeaders.filter((value, i) => i % 2 === 0 && value.toLowerCase() === 'host').length;
  if (hostHeaders !== 1) return badRequest(`send exactly one Host header (got ${hostHeaders})`);
  const host = hostOfHeader(req.headers.host!);
  if (host === null) return badRequest('the Host header must be a host name or address, with an optional :port');
  if (!hosts.allows(host)) {
    return {
      ok: false,
      status: 421,
      code: 'FORBIDDEN',
      message: `"${host}" is not a name of this nbdmux daemon; if it is one, start nbdmux-server with --allowed-host ${host}`,
    };
  }
  const target = req.url ?? '';
  // Only a path: nbdmux is no proxy, and the URL parser throws on a malformed absolute form.
  if (!target.startsWith('/')) return badRequest('the request target must be a path, such as /exports');
  return { ok: true, url: new URL(`http://nbdmux.invalid${target}`) };
}

function badRequest(message: string): Screening {
  return { ok: false, status: 400, code: 'BAD_REQUEST', message };
}
