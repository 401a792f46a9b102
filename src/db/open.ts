import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { fileURLToPath } from 'node:url';
import * as schema from './schema.js';

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

/** The migrations shipped beside the built daemon (dist/src/db -> drizzle/). */
export const builtMigrationsFolder = fileURLToPath(new URL('../../../drizzle', import.meta.url));

/**
 * Opens (creating if needed) the state database and applies every pending migration. `file` may
 * be ':memory:'; tests running from the sources pass the repository's drizzle/ folder.
 */
export function openDatabase(file: string, migrationsFolder = builtMigrationsFolder): Db {
  const sqlite = new Database(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  // A checkpoint rewinds the WAL but leaves the file at its largest; cut it back to 1 MiB.
  sqlite.pragma(`journal_size_limit = ${1024 * 1024}`);
  const db = drizzle(sqlite, { schema });
  migrate(db, { migrationsFolder });
  sqlite.pragma('foreign_keys = ON');
  return db;
}
