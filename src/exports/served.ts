import { asc, eq, isNull } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable, exportVersionsTable } from '../db/schema.js';
import type { ConnectionTable, ServedExport } from '../supervisor/index.js';
import type { PinnedFiles } from './pinned-files.js';

/** What the registry needs from the data plane. */
export interface DataPlane {
  applyExports(exports: readonly ServedExport[]): void;
  /** Where copy-on-write diffs go: nbd-server's config must be able to name it. */
  readonly cowDir: string;
  readonly connections: Pick<ConnectionTable, 'countByExport' | 'countByVersion' | 'kill'>;
}

/** The exports every new NBD connection may choose from: their current versions whose pinned file is held open. */
export function servedExports(db: Pick<Db, 'select'>, fdOf: PinnedFiles['fdOf']): ServedExport[] {
  return db
    .select({
      id: exportsTable.id,
      versionId: exportVersionsTable.id,
      name: exportsTable.name,
      file: exportVersionsTable.file,
      readonly: exportsTable.readonly,
      cow: exportsTable.cow,
      allow: exportsTable.allow,
    })
    .from(exportsTable)
    .innerJoin(exportVersionsTable, eq(exportVersionsTable.id, exportsTable.currentVersionId))
    .where(isNull(exportsTable.removedAt))
    .orderBy(asc(exportsTable.name))
    .all()
    .flatMap(({ file, ...row }) => {
      const fd = fdOf(row.versionId);
      return fd === undefined || file === null ? [] : [{ ...row, file, fd }];
    });
}
