import { desc, eq } from 'drizzle-orm';
import type { BootArtifacts, BootInfo } from '../boot/artifacts.js';
import type { Db } from '../db/open.js';
import { exportVersionsTable, type ExportRow, type VersionRow } from '../db/schema.js';
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

/** What a view is read from. */
export interface ViewSources {
  db: Pick<Db, 'select'>;
  pins: Pick<PinnedFiles, 'changeOf'>;
  imports: Pick<VersionImports, 'viewOf'>;
  boot: Pick<BootArtifacts, 'bootInfo'>;
}

/** An export row as the control plane shows it, with `counts` of live connections per export id. */
export function exportView(
  { currentVersionId, ...row }: ExportRow,
  counts: ReadonlyMap<number, number>,
  { db, pins, imports, boot }: ViewSources,
): ExportView {
  const current = versionById(db, currentVersionId);
  const newest = db
    .select()
    .from(exportVersionsTable)
    .where(eq(exportVersionsTable.exportId, row.id))
    .orderBy(desc(exportVersionsTable.version))
    .limit(1)
    .get();
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
