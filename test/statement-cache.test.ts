import Database from 'better-sqlite3';
import { desc, eq, sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { cacheStatements } from '../src/db/statement-cache.js';
import { eventsTable } from '../src/db/schema.js';
import { memoryDatabase } from './helpers/db.js';

describe('the statement cache', () => {
  it('compiles a text once and hands back the same statement', () => {
    const sqlite = new Database(':memory:');
    cacheStatements(sqlite);
    const first = sqlite.prepare('select 1 as one');
    expect(sqlite.prepare('select 1 as one')).toBe(first);
    expect(sqlite.prepare('select 2 as two')).not.toBe(first);
  });

  it('hands a statement back out of raw mode, as a fresh one would be', () => {
    const sqlite = new Database(':memory:');
    cacheStatements(sqlite);
    expect(sqlite.prepare('select 1 as one').raw().get()).toEqual([1]);
    expect(sqlite.prepare('select 1 as one').get()).toEqual({ one: 1 });
  });

  it('keeps at most its limit, dropping the least recently used', () => {
    const sqlite = new Database(':memory:');
    cacheStatements(sqlite, 2);
    const a = sqlite.prepare('select 1');
    const b = sqlite.prepare('select 2');
    expect(sqlite.prepare('select 1')).toBe(a); // used again: now b is the oldest
    sqlite.prepare('select 3');
    expect(sqlite.prepare('select 1')).toBe(a);
    expect(sqlite.prepare('select 2')).not.toBe(b);
  });

  it("serves drizzle's mapped and raw queries of the same database alike, again and again", () => {
    const db = memoryDatabase();
    const insert = db.$client.prepare('insert into events (at, type, details) values (?, ?, ?)');
    for (const type of ['daemon.started', 'daemon.stopped', 'daemon.started']) insert.run(new Date().toISOString(), type, '{}');
    for (let round = 0; round < 3; round++) {
      // Fields mapped by drizzle (raw mode underneath), then objects from the same kind of statement.
      const newest = db.select({ type: eventsTable.type }).from(eventsTable).orderBy(desc(eventsTable.id)).limit(1).get();
      expect(newest).toEqual({ type: 'daemon.started' });
      const counted = db.all<{ n: number }>(sql`select count(*) as n from events where type = ${'daemon.started'}`);
      expect(counted).toEqual([{ n: 2 }]);
      expect(db.select().from(eventsTable).where(eq(eventsTable.id, 2)).get()).toMatchObject({ id: 2, type: 'daemon.stopped' });
    }
  });
});
