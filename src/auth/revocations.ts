import { eq, lte } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { revokedSessionsTable } from '../db/schema.js';
import type { Session } from './tokens.js';

/**
 * Sessions logged out before they expire, kept in the database so that a restart does not bring
 * a logged-out cookie back. Rows of expired sessions are pruned at start and on every logout:
 * the table only grows by logouts, and an expired cookie is refused before it is looked up.
 */
export class RevokedSessions {
  constructor(private readonly db: Db) {
    this.pruneExpired();
  }

  revoke(session: Session): void {
    this.pruneExpired();
    this.db.insert(revokedSessionsTable).values({ id: session.id, expiresAt: session.expiresAt }).onConflictDoNothing().run();
  }

  isRevoked(session: Session): boolean {
    return (
      this.db.select({ id: revokedSessionsTable.id }).from(revokedSessionsTable).where(eq(revokedSessionsTable.id, session.id)).get() !==
      undefined
    );
  }

  private pruneExpired(now = Date.now()): void {
    this.db.delete(revokedSessionsTable).where(lte(revokedSessionsTable.expiresAt, now)).run();
  }
}
