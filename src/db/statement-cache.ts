import type Database from 'better-sqlite3';

/**
 * Room for every statement the daemon's code writes (a few dozen) and then some: texts that vary
 * with their input (an `IN (...)` list, say) push out the least recently used instead of growing.
 */
const defaultLimit = 256;

/**
 * Makes `sqlite.prepare` reuse the statement it compiled for the same text. drizzle prepares
 * every query it runs anew, and a connection's bookkeeping (about 16 statements from accept to
 * close) then spends more time in SQLite's compiler than in the statements themselves (measured
 * in docs/performance.md). A statement is handed out in the mode a fresh one has: drizzle turns
 * raw mode on for some calls and relies on it being off for others. nbdmux never iterates, so a
 * statement is never busy when it is reused.
 */
export function cacheStatements(sqlite: Database.Database, limit = defaultLimit): void {
  const prepare = sqlite.prepare.bind(sqlite);
  const cache = new Map<string, Database.Statement>();
  sqlite.prepare = ((source: string) => {
    let statement = cache.get(source);
    if (statement === undefined) {
      statement = prepare(source);
      if (cache.size >= limit) cache.delete(cache.keys().next().value!);
    } else {
      cache.delete(source); // re-inserted below: the Map's order is the order of last use
      if (statement.reader) statement.raw(false);
    }
    cache.set(source, statement);
    return statement;
  }) as typeof sqlite.prepare;
}
