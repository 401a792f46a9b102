import type http from 'node:http';

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
export function isCrossSite(req: http.IncomingMessage): boolean {
  return req.headers.origin !== undefined && !hasOwnOrigin(req);
}
