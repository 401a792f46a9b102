import { and, asc, eq, isNotNull, isNull } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable, exportVersionsTable, type ExportRow } from '../db/schema.js';
import { admits } from '../rules/allow-list.js';

/** What a boot script needs of an export, and who may boot it; `version` is its current version's number. */
export type BootableExport = Pick<ExportRow, 'id' | 'name' | 'cmdline' | 'allow' | 'cow'> & { version: number };

const columns = {
  id: exportsTable.id,
  name: exportsTable.name,
  cmdline: exportsTable.cmdline,
  allow: exportsTable.allow,
  cow: exportsTable.cow,
  version: exportVersionsTable.version,
};
/** Not removed, and with a current version: what GET /exports shows as `serving`. */
const serving = and(isNull(exportsTable.removedAt), isNotNull(exportsTable.currentVersionId));
const currentVersion = eq(exportVersionsTable.id, exportsTable.currentVersionId);

/**
 * The exports a client may boot, read for the open boot routes. One export is found by its
 * indexed name or id, so a request (a refused one above all) costs the same with 10 exports or
 * 10,000; only the menu reads them all.
 */
export class BootableExports {
  constructor(private readonly db: Pick<Db, 'select'>) {}

  /** The export of that name or id, when it serves; `admits` says who may boot it. */
  find(which: { name: string } | { id: number }): BootableExport | undefined {
    const match = 'name' in which ? eq(exportsTable.name, which.name) : eq(exportsTable.id, which.id);
    return this.db.select(columns).from(exportsTable).innerJoin(exportVersionsTable, currentVersion).where(and(match, serving)).get();
  }

  /** Every export `client` may boot, by name: the menu. */
  all(client: string): BootableExport[] {
    return this.db
      .select(columns)
      .from(exportsTable)
      .innerJoin(exportVersionsTable, currentVersion)
      .where(serving)
      .orderBy(asc(exportsTable.name))
      .all()
      .filter((exp) => admits(exp, client));
  }
}
