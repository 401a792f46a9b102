import { desc, eq, inArray, sql } from 'drizzle-orm';
import type { BootArtifacts, BootInfo } from '../boot/artifacts.js';
import type { Db } from '../db/open.js';
import { exportsTable, exportVersionsTable, type ExportRow, type VersionRow } from '../db/schema.js';
import type { ImportView, VersionImports } from './imports.js';
import type { FileChange, PinnedFiles } from './pinned-files.js';
import { versionById } from './versions.js';

/** `importing`: its first version is not ready yet, and no client can attach it; `failed`: that import failed. */
export type ExportState = 'importing' | 'failed' | 'serving' | 'draining';

/** An export as the control plane shows it: its settings, and its current version's image. */
export type ExportView = Omit<ExportRow, 'removedAt' | 'currentVersionId'> &
  Pick<VersionRow, 'file' | 'size' | 'sha256'> & {
    removedAt: string | null;
    /** The current version's number. */
    version: number | null;
    state: ExportState;
    connections: number;
    /** Null while `file` still leads to the file judged at registration. */
    fileChange: FileChange | null;
    /** The newest version's import, while it runs or once it failed; null when the newest version is ready. */
    import: ImportView | null;
    /** Whether a machine can boot its current version from nbdmux (GET /boot/{name}.ipxe), and with what. */
    boot: BootInfo;
  };

/** What a view is read from, beside the export's row and its versions. */
export interface ViewSources {
  pins: Pick<PinnedFiles, 'changeOf'>;
  imports: Pick<VersionImports, 'viewOf'>;
  boot: Pick<BootArtifacts, 'bootInfo'>;
}

/** The versions a view shows: the one served, and the newest (an import under way or failed). */
export interface ViewVersions {
  current: VersionRow | undefined;
  newest: VersionRow | undefined;
}

/** One export's versions for its view: two queries. */
export function versionsOfOne(db: Pick<Db, 'select'>, { id, currentVersionId }: ExportRow): ViewVersions {
  const newest = db
    .select()
    .from(exportVersionsTable)
    .where(eq(exportVersionsTable.exportId, id))
    .orderBy(desc(exportVersionsTable.version))
    .limit(1)
    .get();
  return { current: versionById(db, currentVersionId), newest };
}

/**
 * Every export's versions for a list, in two queries whatever the number of exports: asked one
 * export at a time, a list of 1000 made 2000 queries (GET /exports took 200 ms, most of it
 * building and compiling them).
 */
export function versionsOfAll(db: Pick<Db, 'select'>): (row: ExportRow) => ViewVersions {
  const v = exportVersionsTable;
  const current = db
    .select()
    .from(v)
    .where(inArray(v.id, db.select({ id: exportsTable.currentVersionId }).from(exportsTable)))
    .all();
  const newest = db
    .select()
    .from(v)
    .where(sql`(${v.exportId}, ${v.version}) in (select ${v.exportId}, max(${v.version}) from ${v} group by ${v.exportId})`)
    .all();
  const currentById = new Map(current.map((version) => [version.id, version]));
  const newestByExport = new Map(newest.map((version) => [version.exportId, version]));
  return ({ id, currentVersionId }) => ({
    current: currentVersionId === null ? undefined : currentById.get(currentVersionId),
    newest: newestByExport.get(id),
  });
}

/** An export row as the control plane shows it, with `counts` of live connections per export id. */
export function exportView(
  { currentVersionId, ...row }: ExportRow,
  counts: ReadonlyMap<number, number>,
  { current, newest }: ViewVersions,
  { pins, imports, boot }: ViewSources,
): ExportView {
  const importing =
    newest && (newest.state === 'importing' || newest.state === 'failed') && newest.id !== currentVersionId ? newest : undefined;
  return {
    ...row,
    file: current?.file ?? null,
    size: current?.size ?? null,
    sha256: current?.sha256 ?? null,
    version: current?.version ?? null,
    state: row.removedAt !== null ? 'draining' : current ? 'serving' : importing?.state === 'importing' ? 'importing' : 'failed',
    connections: counts.get(row.id) ?? 0,
    fileChange: row.removedAt === null && currentVersionId !== null ? pins.changeOf(currentVersionId) : null,
    import: importing ? imports.viewOf(importing) : null,
    boot: boot.bootInfo(row),
  };
}
