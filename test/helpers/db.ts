import { fileURLToPath } from 'node:url';
import { openDatabase, type Db } from '../../src/db/open.js';

/** The repository's migrations: what a database in a test is built by, never a hand-made schema. */
export const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));

/** A fresh database in memory, migrated by the real migrations: milliseconds, nothing to clean up. */
export function memoryDatabase(): Db {
  return openDatabase(':memory:', migrationsFolder);
}
