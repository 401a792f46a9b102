import type http from 'node:http';
import { contentType, readBody } from './body.js';
import { clientAddressOf } from '../rules/client-address.js';
import type { AuthGate } from '../auth/gate.js';
import { renderLoginPage } from './login-page.js';
import { hasOwnOrigin } from '../auth/origin.js';
import { sessionCookie } from '../auth/session-cookie.js';
import { sessionLifetimeMs } from '../auth/tokens.js';

/** The page a browser without a session gets at `/`. */
export function loginPage(res: http.ServerResponse): void {
  page(res, 200, renderLoginPage());
}

/** POST /login from the login form (or JSON `{password}`): sets the session cookie. */
export async function login(gate: AuthGate, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  if (!gate.required) return redirect(res, '/');
  if (!hasOwnOrigin(req)) return page(res, 403, renderLoginPage('Log in from this page, not from another site.'));
  const outcome = gate.logIn(clientAddressOf(req.socket), await readPassword(req));
  if (!outcome.ok) {
    if (outcome.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(outcome.retryAfterSeconds));
    return page(res, outcome.status, renderLoginPage(outcome.status === 401 ? 'Wrong password.' : `${capitalised(outcome.message)}.`));
  }
  res.setHeader('set-cookie', sessionCookie(req, outcome.token, sessionLifetimeMs / 1000));
  redirect(res, '/');
}

/** POST /logout: ends the session, closing its live WebSockets, and clears the cookie. */
export function logout(gate: AuthGate, req: http.IncomingMessage, res: http.ServerResponse): void {
  if (hasOwnOrigin(req)) gate.logOut(req);
  res.setHeader('set-cookie', sessionCookie(req, '', 0));
  redirect(res, '/');
}

async function readPassword(req: http.IncomingMessage): Promise<string | null> {
  const body = (await readBody(req)).toString('utf8');
  if (contentType(req) === 'application/json') {
    try {
      const parsed = JSON.parse(body) as { password?: unknown };
      return typeof parsed.password === 'string' ? parsed.password : null;
    } catch {
      return null;
    }
  }
  return new URLSearchParams(body).get('password');
}

function capitalised(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function page(res: http.ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

function redirect(res: http.ServerResponse, location: string): void {
  res.writeHead(303, { location, 'cache-control': 'no-store' });
  res.end();
}
