import { and, eq, inArray, isNull, ne, or } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable, exportVersionsTable, type ExportRow } from '../db/schema.js';
import { conflict } from '../errors.js';

interface Holder {
  name: string;
  readonly: boolean;
  removed: boolean;
}

/**
 * Refuses to make `file` (judged as `identity`: device, inode and birth time, so a hard link or a
 * second path to it is the same file) a version of `exp` when that would put a writer beside any
 * other export of the file: two machines writing one image corrupt it, and a reader under a
 * writer reads a disk changing beneath its page cache. The other exports are those serving the
 * file now, and those whose live connections still use it (a removed export draining, an older
 * version kept by the clients that attached it). Copy-on-write exports never write the file.
 * Called inside the transaction that makes the version current, so two requests at once cannot
 * both pass.
 */
export function refuseSecondWriter(
  db: Pick<Db, 'select'>,
  exp: Pick<ExportRow, 'id' | 'readonly'>,
  file: string,
  identity: string,
  liveVersionIds: readonly number[],
): void {
  const holders: Holder[] = db
    .select({ name: exportsTable.name, readonly: exportsTable.readonly, removedAt: exportsTable.removedAt })
    .from(exportVersionsTable)
    .innerJoin(exportsTable, eq(exportsTable.id, exportVersionsTable.exportId))
    .where(
      and(
        eq(exportVersionsTable.fileIdentity, identity),
        ne(exportsTable.id, exp.id),
        or(
          and(isNull(exportsTable.removedAt), eq(exportsTable.currentVersionId, exportVersionsTable.id)),
          inArray(exportVersionsTable.id, [...liveVersionIds]),
        ),
      ),
    )
    .all()
    .map(({ name, readonly, removedAt }) => ({ name, readonly, removed: removedAt !== null }));
  const writer = holders.find((holder) => !holder.readonly);
  if (writer) {
    throw conflict(
      `${file} is written by the read-write export "${writer.name}"${held(writer)}: no other export may serve it meanwhile; ${free(writer)}, or register a copy of the file`,
    );
  }
  const other = holders[0];
  if (!exp.readonly && other) {
    throw conflict(
      `${file} is served by the export "${other.name}"${held(other)}: a read-write export must be its file's only export; ${free(other)}, or register a copy of the file`,
    );
  }
}

function held(holder: Holder): string {
  return holder.removed ? ' (removed; its live connections still use the file)' : '';
}

function free(holder: Holder): string {
  return holder.removed ? 'wait for them to end' : `remove "${holder.name}" first`;
}
