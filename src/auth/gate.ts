import type http from 'node:http';
import { parse as parseCookies } from 'cookie';
import type { WebSocket } from 'ws';
import type { EventLog } from '../events/event-log.js';
import type { Actor } from '../events/event-map.js';
import { contentType, readBody } from '../http/body.js';
import { renderLoginPage } from './login-page.js';
import { crossSiteRefusal, hasOwnOrigin } from './origin.js';
import type { RevokedSessions } from './revocations.js';
import { defaultThrottleLimits, FailureThrottle, type Refusal as ThrottleRefusal } from './throttle.js';
import { constantTimeEqual, sessionLifetimeMs, SessionTokens, type Session } from './tokens.js';
import { clientAddressOf } from '../net/client-address.js';

const cookieName = 'nbdmux_session';

export type Identity = { via: 'open' } | { via: 'bearer' } | { via: 'cookie'; session: Session };
/** Why a request may not use the control plane, with the HTTP status that says so. */
export interface Refusal {
  ok: false;
  status: 401 | 403 | 429;
  message: string;
  retryAfterSeconds?: number;
}
/** Who is calling, as every procedure sees it: an identity and the address it came from; or why it may not call. */
export type Caller = { ok: true; identity: Identity; client: string } | Refusal;

/**
 * Who may use the control plane. With no admin password everyone may (the daemon warns); with
 * one, a request carries `Authorization: Bearer <password>` (scripts) or a session cookie from
 * POST /login (browsers). Wrong passwords are throttled per source address and in total, bearer
 * or form alike.
 */
export class AuthGate {
  readonly required: boolean;
  private readonly tokens: SessionTokens | null;
  private readonly throttle = new FailureThrottle();
  private readonly sockets = new Map<string, Set<WebSocket>>();
  private readonly callers = new WeakMap<http.IncomingMessage, Caller>();

  constructor(
    private readonly password: string | undefined,
    secret: string | undefined,
    private readonly events: EventLog,
    /** Sessions logged out before they expire, so a copied cookie stops working too. */
    private readonly revoked: RevokedSessions,
  ) {
    this.required = password !== undefined;
    this.tokens = password !== undefined && secret !== undefined ? new SessionTokens(secret, password) : null;
  }

  /**
   * The caller of a request, decided once however many places ask (the HTTP server, the tRPC
   * context, a WebSocket upgrade): a wrong password counts once against the throttle.
   */
  caller(req: http.IncomingMessage): Caller {
    let caller = this.callers.get(req);
    if (caller === undefined) {
      caller = this.decide(req);
      this.callers.set(req, caller);
    }
    return caller;
  }

  private decide(req: http.IncomingMessage): Caller {
    const identity = this.identify(req);
    if (!identity.ok) return identity;
    const crossSite = crossSiteRefusal(req, identity.identity);
    return crossSite ?? { ...identity, client: clientAddress(req) };
  }

  private identify(req: http.IncomingMessage): { ok: true; identity: Identity } | Refusal {
    if (!this.required) return { ok: true, identity: { via: 'open' } };
    const client = clientAddress(req);
    const bearer = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (bearer !== undefined) {
      const refusal = this.throttle.refusal(client);
      if (refusal) return throttled(refusal);
      if (constantTimeEqual(bearer, this.password!)) return { ok: true, identity: { via: 'bearer' } };
      this.throttle.fail(client);
      this.events.record('auth.login-failed', null, { client, via: 'bearer' });
      return { ok: false, status: 401, message: 'wrong password in the Authorization header' };
    }
    const session = this.sessionOf(req);
    if (session) return { ok: true, identity: { via: 'cookie', session } };
    return { ok: false, status: 401, message: 'authentication required: send "Authorization: Bearer <admin password>", or log in at /' };
  }

  /** POST /login from the login form (or JSON `{password}`): sets the session cookie. */
  async login(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const client = clientAddress(req);
    if (!this.required) return redirect(res, '/');
    if (!hasOwnOrigin(req)) return page(res, 403, renderLoginPage('Log in from this page, not from another site.'));
    // Read before the throttle is asked, so that asking, checking and counting happen in one
    // turn of the event loop: concurrent requests cannot all pass the throttle at once.
    const password = await readPassword(req);
    const refusal = this.throttle.refusal(client);
    if (refusal) {
      const verdict = throttled(refusal);
      res.setHeader('retry-after', String(verdict.retryAfterSeconds));
      return page(res, 429, renderLoginPage(`${capitalised(verdict.message)}.`));
    }
    if (password === null || !constantTimeEqual(password, this.password!)) {
      this.throttle.fail(client);
      this.events.record('auth.login-failed', null, { client, via: 'login' });
      return page(res, 401, renderLoginPage('Wrong password.'));
    }
    const { token, session } = this.tokens!.issue();
    this.events.record('auth.login-succeeded', null, { client, actor: sessionActor(session) });
    res.setHeader('set-cookie', sessionCookie(req, token, sessionLifetimeMs / 1000));
    redirect(res, '/');
  }

  /** POST /logout: ends the session, closing its live WebSockets, and clears the cookie. */
  logout(req: http.IncomingMessage, res: http.ServerResponse): void {
    const session = this.sessionOf(req);
    if (session && hasOwnOrigin(req)) {
      this.revoked.revoke(session);
      for (const socket of this.sockets.get(session.id) ?? []) socket.close(4001, 'logged out');
      this.sockets.delete(session.id);
      this.events.record('auth.logout', null, { client: clientAddress(req), actor: sessionActor(session) });
    }
    res.setHeader('set-cookie', sessionCookie(req, '', 0));
    redirect(res, '/');
  }

  /** Remembers a session's WebSocket so that logging out can close it. */
  trackSocket(session: Session, socket: WebSocket): void {
    const set = this.sockets.get(session.id) ?? new Set();
    set.add(socket);
    this.sockets.set(session.id, set);
    socket.once('close', () => {
      set.delete(socket);
      if (set.size === 0) this.sockets.delete(session.id);
    });
  }

  private sessionOf(req: http.IncomingMessage): Session | null {
    const token = parseCookies(req.headers.cookie ?? '')[cookieName];
    const session = token && this.tokens ? this.tokens.verify(token) : null;
    return session && !this.revoked.isRevoked(session) ? session : null;
  }
}

export function loginPage(res: http.ServerResponse): void {
  page(res, 200, renderLoginPage());
}

/** Who made a change, as its events record it. */
export function actorOf({ identity, client }: Extract<Caller, { ok: true }>): Actor {
  return { actor: identity.via === 'cookie' ? sessionActor(identity.session) : identity.via, client };
}

/** How events name the session that acted: enough of its id to tell sessions apart, too little to matter if read. */
export function sessionActor(session: Session): `session:${string}` {
  return `session:${session.id.slice(0, 8)}`;
}

const refusalCodes = { 401: 'UNAUTHORIZED', 403: 'FORBIDDEN', 429: 'TOO_MANY_REQUESTS' } as const;

/** The error code of a refusal, over tRPC and REST alike. */
export function refusalCode(refusal: Refusal): (typeof refusalCodes)[Refusal['status']] {
  return refusalCodes[refusal.status];
}

/** The headers a refusal carries: the scheme to authenticate with, or when to try again. */
export function refusalHeaders(refusal: Refusal): Record<string, string> {
  if (refusal.status === 401) return { 'www-authenticate': 'Bearer realm="nbdmux"' };
  if (refusal.status === 429) return { 'retry-after': String(refusal.retryAfterSeconds) };
  return {};
}

function throttled(refusal: ThrottleRefusal): Refusal & { status: 429; retryAfterSeconds: number } {
  const seconds = Math.ceil(refusal.retryAfterMs / 1000);
  const message =
    refusal.scope === 'source'
      ? `too many failed attempts from this address: try again in ${seconds} s`
      : `too many failed attempts from all addresses (${defaultThrottleLimits.total} a minute): password checks resume in ${seconds} s; logged-in sessions keep working`;
  return { ok: false, status: 429, message, retryAfterSeconds: seconds };
}

function capitalised(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
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

export function clientAddress(req: http.IncomingMessage): string {
  return clientAddressOf(req.socket);
}

function sessionCookie(req: http.IncomingMessage, token: string, maxAgeSeconds: number): string {
  const secure = (req.socket as { encrypted?: boolean }).encrypted === true || req.headers['x-forwarded-proto'] === 'https';
  return `${cookieName}=${token}; Path=/; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}

function page(res: http.ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

function redirect(res: http.ServerResponse, location: string): void {
  res.writeHead(303, { location, 'cache-control': 'no-store' });
  res.end();
}
