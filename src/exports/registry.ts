import fs, { closeSync } from 'node:fs';
import { and, asc, eq, inArray, isNull, isNotNull, or } from 'drizzle-orm';
import type { BootArtifacts } from '../boot/artifacts.js';
import type { Db } from '../db/open.js';
import { exportsTable, exportVersionsTable, type ExportRow, type VersionRow } from '../db/schema.js';
import { badInput, conflict, notFound } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import type { Actor } from '../model/event-map.js';
import { ImportError, type Importer } from '../images/importer.js';
import type { ImportedImage } from '../images/pipeline.js';
import { errorText, type Logger } from '../log.js';
import { pinImage, type PinnedImage } from './image-file.js';
import { VersionImports } from './imports.js';
import { refuseSecondWriter } from './one-writer.js';
import { sourceOf, type CreateExportInput, type DeleteExportInput, type RollbackInput, type UpdateExportInput } from './inputs.js';
import { openPinned, type PinnedFiles } from './pinned-files.js';
import { servedExports, type DataPlane } from './served.js';
import { configSafePathPattern } from '../rules/names.js';
import { exportView, versionsOfAll, versionsOfOne, type ExportView } from './views.js';
import {
  collectGarbage,
  insertImportingVersion,
  insertVersion,
  rollbackTarget,
  versionById,
  versionsOf,
  type Tx,
  type VersionView,
} from './versions.js';

export interface RemovalResult {
  name: string;
  /** Live connections cut by a forced removal. */
  killed: number;
  /** Live connections left to finish on their own. */
  draining: number;
}

/**
 * The export registry: its rules, and the one place that changes it. Each change commits the
 * database and rewrites the nbd-server config in one synchronous step, so concurrent requests
 * can never leave the two disagreeing.
 */
export class ExportRegistry {
  private readonly imports: VersionImports;

  constructor(
    private readonly db: Db,
    private readonly dataPlane: DataPlane,
    private readonly events: EventLog,
    private readonly pins: PinnedFiles,
    private readonly options: {
      imageRoots: readonly string[];
      keepVersions: number;
      importer: Importer;
      boot: Pick<BootArtifacts, 'bootInfo' | 'versionCurrent' | 'removed'>;
      log: Logger;
    },
  ) {
    this.imports = new VersionImports(db, events, options.importer, options.log);
  }

  /** Exports being served, then those removed but still draining live connections. */
  list(): ExportView[] {
    const counts = this.dataPlane.connections.countByExport();
    const rows = this.db
      .select()
      .from(exportsTable)
      .where(or(isNull(exportsTable.removedAt), inArray(exportsTable.id, [...counts.keys()])))
      .orderBy(asc(exportsTable.name), asc(exportsTable.id))
      .all();
    const versionsOf = versionsOfAll(this.db);
    return rows.map((row) => this.view(row, counts, versionsOf(row)));
  }

  get(name: string): ExportView {
    return this.view(this.serving(name), this.dataPlane.connections.countByExport());
  }

  async create(input: CreateExportInput, actor: Actor): Promise<ExportView> {
    this.refuseTakenName(input.name);
    if (input.cow && !configSafePathPattern.test(this.dataPlane.cowDir)) {
      throw badInput(
        'cow',
        `copy-on-write diffs go to ${this.dataPlane.cowDir}, a path nbd-server's config would misread; run nbdmux with a data dir of A-Z a-z 0-9 . _ / + - only`,
      );
    }
    const source = sourceOf(input);
    const insertExport = (tx: Tx) =>
      tx
        .insert(exportsTable)
        .values({
          name: input.name,
          readonly: input.readonly,
          cow: input.cow,
          allow: input.allow,
          cmdline: input.cmdline,
          createdAt: new Date().toISOString(),
        })
        .returning()
        .get();
    if ('url' in source) {
      const version = this.takingName(input.name, () =>
        this.db.transaction((tx) => insertImportingVersion(tx, insertExport(tx).id, source.url)),
      );
      this.startImport(input.name, version, source, actor);
      return this.get(input.name);
    }
    const image = await pinImage(source.file, this.options.imageRoots, input.readonly);
    const row = this.takingName(input.name, () =>
      this.switchVersion(image, (tx) => {
        const exp = insertExport(tx);
        return { exp, versionId: insertVersion(tx, exp.id, image) };
      }),
    );
    this.events.record('export.created', row.name, {
      id: row.id,
      file: image.realPath,
      readonly: row.readonly,
      cow: row.cow,
      allow: row.allow,
      cmdline: row.cmdline,
      size: image.size,
      ...actor,
    });
    return this.view(row, new Map());
  }

  /**
   * Makes a file, or an imported image once complete, the export's new current version. The
   * current one serves every new client until the switch, which commits and rewrites the config
   * in one synchronous step; live clients keep the version they attached.
   */
  async update(input: UpdateExportInput, actor: Actor): Promise<ExportView> {
    const { name } = input;
    const source = sourceOf(input);
    if ('url' in source) {
      const exp = this.serving(name);
      const version = this.db.transaction((tx) => insertImportingVersion(tx, exp.id, source.url));
      this.startImport(name, version, source, actor);
      return this.get(name);
    }
    const readonly = this.serving(name).readonly;
    const image = await pinImage(source.file, this.options.imageRoots, readonly);
    const row = this.switchVersion(image, (tx) => {
      // Looked up again: the export may have been removed while the file was judged.
      const exp = this.serving(name, tx);
      return { exp, versionId: insertVersion(tx, exp.id, image) };
    });
    this.recordSwitch(row, 'update', actor);
    return this.get(name);
  }

  /** Makes the previous (or the given) version current again, for new clients; live ones keep theirs. */
  rollback({ name, version }: RollbackInput, actor: Actor): ExportView {
    const exp = this.serving(name);
    const target = rollbackTarget(this.db, exp, version);
    const opened = openPinned(target.file!, target.fileIdentity);
    if (typeof opened === 'string') {
      throw conflict(
        `version ${target.version} of "${name}" cannot be served again: its file ${target.file} now leads to ${opened}; choose another version`,
      );
    }
    const row = this.switchVersion({ fd: opened.fd, realPath: target.file!, identity: opened.identity }, () => ({
      exp,
      versionId: target.id,
    }));
    this.recordSwitch(row, 'rollback', actor);
    return this.get(name);
  }

  /** At start: imports the last run left unfinished are marked failed, their partial files removed. */
  failInterruptedImports(): void {
    this.imports.failInterrupted(
      (exportId) => this.db.select({ name: exportsTable.name }).from(exportsTable).where(eq(exportsTable.id, exportId)).get()!.name,
    );
  }

  /** An export's versions, newest first. */
  versions(name: string): VersionView[] {
    return versionsOf(this.db, this.serving(name), this.dataPlane.connections.countByVersion());
  }

  /** Deletes the stored files no version can need any more (see collectGarbage). */
  collectGarbage(): void {
    try {
      // A version a machine booted is needed as much as one a connection holds: it reconnects to it.
      const needed = new Set([...this.dataPlane.connections.countByVersion().keys(), ...this.pins.bootedVersionIds()]);
      const deleted = collectGarbage(this.db, this.options.keepVersions, needed);
      if (deleted.length > 0) this.options.log.info('deleted imported images no version needs', { files: deleted });
    } catch (err) {
      this.options.log.warn('cannot delete unneeded imported images; they stay until the next try', { error: errorText(err) });
    }
  }

  /**
   * Commits `change` (which names the export and the version to make current) and hands the new
   * set to the data plane in one step, serving the version from `image.fd`; then pins it in place
   * of the export's former current version. Refused when the file would have a second writer.
   * The descriptor is closed on failure.
   */
  private switchVersion(
    image: Pick<PinnedImage, 'fd' | 'realPath' | 'identity'>,
    change: (tx: Tx) => { exp: ExportRow; versionId: number },
  ): ExportRow {
    let applied = false;
    let previous: number | null = null;
    // A version a machine booted is held open already: served from that descriptor, this one closes.
    let served = image.fd;
    let row: ExportRow;
    try {
      row = this.db.transaction((tx) => {
        const { exp, versionId } = change(tx);
        refuseSecondWriter(tx, exp, image.realPath, image.identity, [...this.dataPlane.connections.countByVersion().keys()]);
        previous = exp.currentVersionId;
        served = this.pins.fdOf(versionId) ?? image.fd;
        const updated = tx.update(exportsTable).set({ currentVersionId: versionId }).where(eq(exportsTable.id, exp.id)).returning().get();
        this.dataPlane.applyExports(servedExports(tx, (id) => (id === versionId ? served : this.pins.fdOf(id))));
        applied = true;
        return updated;
      });
    } catch (err) {
      // A config may name the descriptor only until the committed set is applied again: once its
      // number is reused, a client would be handed whatever file got it.
      if (applied) this.dataPlane.applyExports(servedExports(this.db, (id) => this.pins.fdOf(id)));
      closeSync(image.fd);
      throw err;
    }
    if (served !== image.fd) closeSync(image.fd);
    this.pins.hold(row.currentVersionId!, row.id, row.name, { ...image, fd: served });
    if (previous !== null) this.pins.release(previous);
    this.options.boot.versionCurrent(row.id, row.currentVersionId!);
    return row;
  }

  private startImport(name: string, version: VersionRow, source: { url: string; sha256: string | undefined }, actor: Actor): void {
    this.imports.start(name, version, source, actor, (image) => this.finishImport(name, version, image));
  }

  /**
   * Serves a complete import: it becomes current unless a newer version already is (then it waits,
   * ready, for a rollback). Its file is judged like any other; an export removed meanwhile gets
   * nothing, and the file goes.
   */
  private async finishImport(name: string, version: VersionRow, image: ImportedImage): Promise<void> {
    let pinned: PinnedImage;
    let switched: ExportRow | null = null;
    try {
      pinned = await pinImage(image.file, this.options.imageRoots, this.notRemoved(version.exportId).readonly);
      const ready = {
        file: pinned.realPath,
        fileIdentity: pinned.identity,
        size: pinned.size,
        sha256: image.sha256,
        stored: true,
        state: 'ready' as const,
      };
      const markReady = (tx: Tx) => tx.update(exportVersionsTable).set(ready).where(eq(exportVersionsTable.id, version.id)).run();
      // Looked up after the await: the export may have been removed or moved on meanwhile.
      const current = versionById(this.db, this.notRemoved(version.exportId).currentVersionId);
      if (current && current.version > version.version) {
        // A newer version already serves: it stays, and this one waits for a rollback.
        closeSync(pinned.fd);
        markReady(this.db);
      } else {
        switched = this.switchVersion(pinned, (tx) => {
          markReady(tx);
          return { exp: this.notRemoved(version.exportId, tx), versionId: version.id };
        });
      }
    } catch (err) {
      // Nothing serves the file yet: it goes with the failure.
      fs.rmSync(image.file, { force: true });
      this.imports.fail(name, version, err);
      return;
    }
    this.events.record('import.done', name, {
      id: version.exportId,
      version: version.version,
      file: pinned.realPath,
      size: pinned.size,
      sha256: image.sha256,
    });
    if (switched) this.recordSwitch(switched, 'import', {});
  }

  /** The export by id, unless removed: an import finishing for a removed export serves nothing. */
  private notRemoved(exportId: number, db: Pick<Db, 'select'> = this.db): ExportRow {
    const exp = db
      .select()
      .from(exportsTable)
      .where(and(eq(exportsTable.id, exportId), isNull(exportsTable.removedAt)))
      .get();
    if (!exp) throw new ImportError('cancelled', 'the import was cancelled: its export was removed');
    return exp;
  }

  /** Runs `insert`, which takes `name`; when another request took it meanwhile, refused with a clear error. */
  private takingName<T>(name: string, insert: () => T): T {
    try {
      return insert();
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') this.refuseTakenName(name);
      throw err;
    }
  }

  private recordSwitch(row: ExportRow, reason: 'update' | 'rollback' | 'import', actor: Partial<Actor>): void {
    const version = versionById(this.db, row.currentVersionId)!;
    this.events.record('export.version-switched', row.name, {
      id: row.id,
      version: version.version,
      file: version.file!,
      reason,
      ...actor,
    });
    this.collectGarbage();
  }

  /**
   * Hides the export from new clients at once. Its live connections drain on their own, or
   * with `force` are cut now. A name that is only draining can be forced again.
   */
  delete({ name, force }: DeleteExportInput, actor: Actor): RemovalResult {
    const counts = this.dataPlane.connections.countByExport();
    const serving = this.findServing(name);
    if (serving) {
      this.db.transaction((tx) => {
        tx.update(exportsTable).set({ removedAt: new Date().toISOString() }).where(eq(exportsTable.id, serving.id)).run();
        this.dataPlane.applyExports(servedExports(tx, (id) => this.pins.fdOf(id)));
      });
      if (serving.currentVersionId !== null) this.pins.release(serving.currentVersionId);
      this.imports.cancelAll(serving.id);
      this.options.boot.removed(serving.id);
    }
    const draining = this.db
      .select({ id: exportsTable.id })
      .from(exportsTable)
      .where(and(eq(exportsTable.name, name), isNotNull(exportsTable.removedAt), inArray(exportsTable.id, [...counts.keys()])))
      .all()
      .map((row) => row.id);
    if (!serving && draining.length === 0) throw notFound(`no export named "${name}"`, { kind: 'list-exports' });
    const live = draining.reduce((sum, id) => sum + (counts.get(id) ?? 0), 0);
    if (!serving && !force) {
      throw conflict(`export "${name}" is already removed and draining ${live} connection(s)`, { kind: 'force-remove', name });
    }
    const killed = force ? this.dataPlane.connections.kill(new Set(draining)) : 0;
    if (serving) this.events.record('export.removed', name, { id: serving.id, force, liveConnections: live, ...actor });
    this.collectGarbage();
    return { name, killed, draining: force ? 0 : live };
  }

  private serving(name: string, db: Pick<Db, 'select'> = this.db): ExportRow {
    const row = this.findServing(name, db);
    if (!row) throw notFound(`no export named "${name}"`, { kind: 'list-exports' });
    return row;
  }

  private findServing(name: string, db: Pick<Db, 'select'> = this.db): ExportRow | undefined {
    return db
      .select()
      .from(exportsTable)
      .where(and(eq(exportsTable.name, name), isNull(exportsTable.removedAt)))
      .get();
  }

  private view(row: ExportRow, counts: ReadonlyMap<number, number>, versions = versionsOfOne(this.db, row)): ExportView {
    return exportView(row, counts, versions, { pins: this.pins, imports: this.imports, boot: this.options.boot });
  }

  private refuseTakenName(name: string): void {
    if (this.findServing(name)) throw conflict(`an export named "${name}" already exists; remove it first or choose another name`);
  }
}
