import crypto from 'node:crypto';

export const sessionLifetimeMs = 7 * 24 * 3600 * 1000;

export interface Session {
  /** Random id: lets a logout find and close this session's WebSockets. */
  id: string;
  expiresAt: number;
}

/**
 * Session cookies are stateless: `payload.signature`, HMAC-SHA256 under a key derived from the
 * signing secret AND the admin password, so changing the password invalidates every session.
 */
export class SessionTokens {
  private readonly key: Buffer;

  constructor(secret: string, password: string) {
    this.key = crypto.createHmac('sha256', secret).update(`nbdmux session key\0${password}`).digest();
  }

  issue(now = Date.now()): { token: string; session: Session } {
    const session = { id: crypto.randomBytes(16).toString('base64url'), expiresAt: now + sessionLifetimeMs };
    const payload = Buffer.from(JSON.stringify(session)).toString('base64url');
    return { token: `${payload}.${this.sign(payload)}`, session };
  }

  /** The session a token proves, or null for anything forged, tampered with, malformed or expired. */
  verify(token: string, now = Date.now()): Session | null {
    const [payload, signature, ...rest] = token.split('.');
    if (!payload || !signature || rest.length > 0) return null;
    if (!constantTimeEqual(signature, this.sign(payload))) return null;
    try {
      const session = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Session;
      if (typeof session.id !== 'string' || typeof session.expiresAt !== 'number') return null;
      return session.expiresAt > now ? session : null;
    } catch {
      return null;
    }
  }

  private sign(payload: string): string {
    return crypto.createHmac('sha256', this.key).update(payload).digest('base64url');
  }
}

/** Compares secrets in time that does not depend on where they differ (or on their lengths). */
export function constantTimeEqual(a: string, b: string): boolean {
  const digest = (s: string) => crypto.createHash('sha256').update(s).digest();
  return crypto.timingSafeEqual(digest(a), digest(b));
}
