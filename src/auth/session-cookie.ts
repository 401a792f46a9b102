import type http from 'node:http';
import { parse, serialize } from 'cookie';

const cookieName = 'nbdmux_session';

/** The session token a browser's request carries, if any. */
export function sessionTokenOf(req: http.IncomingMessage): string | undefined {
  return parse(req.headers.cookie ?? '')[cookieName];
}

/**
 * The cookie that carries a session (or clears it, with an empty token and no lifetime): never
 * readable by scripts, never sent by another site's request, Secure when the browser came over TLS.
 */
export function sessionCookie(req: http.IncomingMessage, token: string, maxAgeSeconds: number): string {
  const secure = (req.socket as { encrypted?: boolean }).encrypted === true || req.headers['x-forwarded-proto'] === 'https';
  return serialize(cookieName, token, { path: '/', maxAge: maxAgeSeconds, httpOnly: true, sameSite: 'strict', secure });
}
