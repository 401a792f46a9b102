import type http from 'node:http';
import type { WebSocket } from 'ws';
import type { EventLog } from '../events/event-log.js';
import { clientAddressOf } from '../rules/client-address.js';
import { sessionActor, type Caller, type Identity, type Refusal } from './caller.js';
import { crossSiteRefusal } from './origin.js';
import type { RevokedSessions } from './revocations.js';
import { sessionTokenOf } from './session-cookie.js';
import { defaultThrottleLimits, FailureThrottle, type Refusal as ThrottleRefusal } from './throttle.js';
import { constantTimeEqual, SessionTokens, type Session } from './tokens.js';

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
    return crossSite ?? { ...identity, client: clientAddressOf(req.socket) };
  }

  private identify(req: http.IncomingMessage): { ok: true; identity: Identity } | Refusal {
    if (!this.required) return { ok: true, identity: { via: 'open' } };
    const client = clientAddressOf(req.socket);
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

  /**
   * A password from the login form: a new session's token, or why not (429 while throttled, 401
   * when wrong). Throttle, check and count in one synchronous step, so concurrent requests
   * cannot all pass the throttle at once.
   */
  logIn(client: string, password: string | null): { ok: true; token: string } | Refusal {
    const refusal = this.throttle.refusal(client);
    if (refusal) return throttled(refusal);
    if (password === null || !constantTimeEqual(password, this.password!)) {
      this.throttle.fail(client);
      this.events.record('auth.login-failed', null, { client, via: 'login' });
      return { ok: false, status: 401, message: 'wrong password' };
    }
    const { token, session } = this.tokens!.issue();
    this.events.record('auth.login-succeeded', null, { client, actor: sessionActor(session) });
    return { ok: true, token };
  }

  /** Ends the session `req` carries, if any, closing its live WebSockets; a copy of its cookie stops working too. */
  logOut(req: http.IncomingMessage): void {
    const session = this.sessionOf(req);
    if (!session) return;
    this.revoked.revoke(session);
    for (const socket of this.sockets.get(session.id) ?? []) socket.close(4001, 'logged out');
    this.sockets.delete(session.id);
    this.events.record('auth.logout', null, { client: clientAddressOf(req.socket), actor: sessionActor(session) });
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
    const token = sessionTokenOf(req);
    const session = token && this.tokens ? this.tokens.verify(token) : null;
    return session && !this.revoked.isRevoked(session) ? session : null;
  }
}

function throttled(refusal: ThrottleRefusal): Refusal & { status: 429; retryAfterSeconds: number } {
  const seconds = Math.ceil(refusal.retryAfterMs / 1000);
  const message =
    refusal.scope === 'source'
      ? `too many failed attempts from this address: try again in ${seconds} s`
      : `too many failed attempts from all addresses (${defaultThrottleLimits.total} a minute): password checks resume in ${seconds} s; logged-in sessions keep working`;
  return { ok: false, status: 429, message, retryAfterSeconds: seconds };
}
