import fs from 'node:fs';
import { and, desc, eq, inArray, max } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable, exportVersionsTable, type ExportRow, type VersionRow } from '../db/schema.js';
import { conflict, notFound } from '../errors.js';
import { identityAt } from './pinned-files.js';

/** A version as the control plane shows it. */
export type VersionView = Pick<VersionRow, 'version' | 'file' | 'sha256' | 'size' | 'createdAt' | 'state' | 'url' | 'error'> & {
  current: boolean;
  /** Live connections attached to it. */
  connections: number;
};

/** What version rows are written through: the database or a transaction on it. */
export type Tx = Pick<Db, 'select' | 'insert' | 'update'>;

/** The next number of an export's versions: one above the highest it ever had. */
function nextVersionNumber(db: Pick<Db, 'select'>, exportId: number): number {
  const row = db
    .select({ highest: max(exportVersionsTable.version) })
    .from(exportVersionsTable)
    .where(eq(exportVersionsTable.exportId, exportId))
    .get();
  return (row?.highest ?? 0) + 1;
}

/** The export's next version, for a file registered by path and judged as `image`; returns its id. */
export function insertVersion(tx: Tx, exportId: number, image: { realPath: string; identity: string; size: number }): number {
  return tx
    .insert(exportVersionsTable)
    .values({
      exportId,
      version: nextVersionNumber(tx, exportId),
      file: image.realPath,
      fileIdentity: image.identity,
      size: image.size,
      state: 'ready',
      createdAt: new Date().toISOString(),
    })
    .returning({ id: exportVersionsTable.id })
    .get().id;
}

/** The export's next version, to be filled by an import of `url`. */
export function insertImportingVersion(tx: Tx, exportId: number, url: string): VersionRow {
  return tx
    .insert(exportVersionsTable)
    .values({ exportId, version: nextVersionNumber(tx, exportId), url, state: 'importing', createdAt: new Date().toISOString() })
    .returning()
    .get();
}

export function versionById(db: Pick<Db, 'select'>, versionId: number | null): VersionRow | undefined {
  if (versionId === null) return undefined;
  return db.select().from(exportVersionsTable).where(eq(exportVersionsTable.id, versionId)).get();
}

/** An export's versions, newest first. */
export function versionsOf(db: Pick<Db, 'select'>, exp: ExportRow, attached: ReadonlyMap<number, number>): VersionView[] {
  return db
    .select()
    .from(exportVersionsTable)
    .where(eq(exportVersionsTable.exportId, exp.id))
    .orderBy(desc(exportVersionsTable.version))
    .all()
    .map(({ version, file, sha256, size, createdAt, state, url, error, id }) => ({
      version,
      file,
      sha256,
      size,
      createdAt,
      state,
      url,
      error,
      current: id === exp.currentVersionId,
      connections: attached.get(id) ?? 0,
    }));
}

/**
 * The version a rollback makes current: `version` if given, else the newest ready one below the
 * current. Refused, with what to do instead, when that version cannot be served.
 */
export function rollbackTarget(db: Pick<Db, 'select'>, exp: ExportRow, version: number | undefined): VersionRow {
  const current = versionById(db, exp.currentVersionId);
  if (version === undefined) {
    const below = db
      .select()
      .from(exportVersionsTable)
      .where(and(eq(exportVersionsTable.exportId, exp.id), eq(exportVersionsTable.state, 'ready')))
      .orderBy(desc(exportVersionsTable.version))
      .all()
      .find((row) => current === undefined || row.version < current.version);
    if (!below) throw conflict(`export "${exp.name}" has no earlier version that can be served`, { kind: 'list-versions', name: exp.name });
    return below;
  }
  const target = db
    .select()
    .from(exportVersionsTable)
    .where(and(eq(exportVersionsTable.exportId, exp.id), eq(exportVersionsTable.version, version)))
    .get();
  if (!target) throw notFound(`export "${exp.name}" has no version ${version}`, { kind: 'list-versions', name: exp.name });
  if (target.id === exp.currentVersionId) throw conflict(`version ${version} of "${exp.name}" is already current`);
  if (target.state !== 'ready') {
    throw conflict(
      `version ${version} of "${exp.name}" is ${target.state === 'deleted' ? 'deleted (its imported file was removed)' : target.state}, so it cannot be served; choose a ready version`,
      { kind: 'list-versions', name: exp.name },
    );
  }
  return target;
}

/**
 * Deletes the files nbdmux imported into its store that nothing can need any more: versions that
 * are neither current (of an export not removed), nor among the newest `keepVersions` of their
 * export that ever got ready, nor `needed` (attached by a live connection, or booted by a machine). A file the operator registered
 * by path is never touched, nor a path that no longer leads to the file judged. Returns the
 * files deleted.
 */
export function collectGarbage(db: Db, keepVersions: number, needed: ReadonlySet<number>): string[] {
  const candidates = db
    .select({ version: exportVersionsTable, currentVersionId: exportsTable.currentVersionId, removedAt: exportsTable.removedAt })
    .from(exportVersionsTable)
    .innerJoin(exportsTable, eq(exportsTable.id, exportVersionsTable.exportId))
    .where(and(eq(exportVersionsTable.stored, true), eq(exportVersionsTable.state, 'ready')))
    .all();
  const deleted: string[] = [];
  for (const { version, currentVersionId, removedAt } of candidates) {
    if (version.file === null || needed.has(version.id)) continue;
    const served = removedAt === null;
    if (served && version.id === currentVersionId) continue;
    // A removed export keeps no history: nothing can become current again.
    if (served && newestCompleted(db, version.exportId, keepVersions).includes(version.id)) continue;
    if (identityAt(version.file) === version.fileIdentity) fs.rmSync(version.file, { force: true });
    db.update(exportVersionsTable).set({ state: 'deleted' }).where(eq(exportVersionsTable.id, version.id)).run();
    deleted.push(version.file);
  }
  return deleted;
}

/** Ids of the export's newest `count` versions that ever got ready. */
function newestCompleted(db: Pick<Db, 'select'>, exportId: number, count: number): number[] {
  return db
    .select({ id: exportVersionsTable.id })
    .from(exportVersionsTable)
    .where(and(eq(exportVersionsTable.exportId, exportId), inArray(exportVersionsTable.state, ['ready', 'deleted'])))
    .orderBy(desc(exportVersionsTable.version))
    .limit(count)
    .all()
    .map((row) => row.id);
}
