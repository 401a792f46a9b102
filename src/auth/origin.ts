import type http from 'node:http';
import type { Identity, Refusal } from './caller.js';

const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/** True when the request names an Origin and it is this server's own. */
export function hasOwnOrigin(req: http.IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return false;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

/** True when a browser sent the request from another site. Requests with no Origin (curl, scripts) are not cross-site. */
function isCrossSite(req: http.IncomingMessage): boolean {
  return req.headers.origin !== undefined && !hasOwnOrigin(req);
}

/**
 * A browser sends the cookie with requests any site makes: only our own pages may act with it.
 * Browsers always send Origin on a WebSocket, and a page from elsewhere must not drive the
 * control plane over one, whatever its credentials.
 */
export function crossSiteRefusal(req: http.IncomingMessage, identity: Identity): Refusal | null {
  if (req.headers.upgrade?.toLowerCase() === 'websocket') {
    const crossSite = identity.via === 'cookie' ? !hasOwnOrigin(req) : isCrossSite(req);
    return crossSite ? { ok: false, status: 403, message: 'cross-origin WebSocket refused' } : null;
  }
  if (identity.via === 'cookie' && !safeMethods.has(req.method ?? 'GET') && !hasOwnOrigin(req)) {
    return { ok: false, status: 403, message: 'cross-site request refused: act from the nbdmux dashboard itself' };
  }
  return null;
}
