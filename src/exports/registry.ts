import { closeSync } from 'node:fs';
import { and, asc, eq, inArray, isNull, isNotNull, or } from 'drizzle-orm';
import type { BootArtifacts, BootInfo } from '../boot/artifacts.js';
import type { Db } from '../db/open.js';
import { exportsTable, type ExportRow } from '../db/schema.js';
import { badInput, conflict, notFound } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import type { Actor } from '../events/event-map.js';
import type { ConnectionTable, ServedExport } from '../supervisor/index.js';
import { pinImage } from './image-file.js';
import type { CreateExportInput, DeleteExportInput } from './inputs.js';
import type { FileChange, PinnedFiles } from './pinned-files.js';
import { configSafePathPattern } from './rules.js';

export type ExportState = 'serving' | 'draining';

/** An export as the control plane shows it. */
export type ExportView = Omit<ExportRow, 'removedAt' | 'fileIdentity' | 'bootInspection' | 'bootIdentity'> & {
  removedAt: string | null;
  state: ExportState;
  connections: number;
  /** Null while `file` still leads to the file judged at registration. */
  fileChange: FileChange | null;
  /** Whether a machine can boot it from nbdmux (GET /boot/{name}.ipxe), and with what. */
  boot: BootInfo;
};

export interface RemovalResult {
  name: string;
  /** Live connections cut by a forced removal. */
  killed: number;
  /** Live connections left to finish on their own. */
  draining: number;
}

/** What the registry needs from the data plane. */
export interface DataPlane {
  applyExports(exports: readonly ServedExport[]): void;
  /** Where copy-on-write diffs go: nbd-server's config must be able to name it. */
  readonly cowDir: string;
  readonly connections: Pick<ConnectionTable, 'countByExport' | 'kill'>;
}

/** The exports every new NBD connection may choose from: those whose pinned file is held open. */
export function servedExports(db: Pick<Db, 'select'>, fdOf: PinnedFiles['fdOf']): ServedExport[] {
  return db
    .select({ id: exportsTable.id, name: exportsTable.name, file: exportsTable.file, readonly: exportsTable.readonly, cow: exportsTable.cow, allow: exportsTable.allow })
    .from(exportsTable)
    .where(isNull(exportsTable.removedAt))
    .orderBy(asc(exportsTable.name))
    .all()
    .flatMap((row) => {
      const fd = fdOf(row.id);
      return fd === undefined ? [] : [{ ...row, fd }];
    });
}

/**
 * The export registry: its rules, and the one place that changes it. Each change commits the
 * database and rewrites the nbd-server config in one synchronous step, so concurrent requests
 * can never leave the two disagreeing.
 */
export class ExportRegistry {
  constructor(
    private readonly db: Db,
    private readonly dataPlane: DataPlane,
    private readonly events: EventLog,
    private readonly pins: PinnedFiles,
    private readonly imageRoots: readonly string[],
    private readonly boot: Pick<BootArtifacts, 'bootInfo' | 'registered' | 'removed'>,
  ) {}

  /** Exports being served, then those removed but still draining live connections. */
  list(): ExportView[] {
    const counts = this.dataPlane.connections.countByExport();
    const rows = this.db
      .select()
      .from(exportsTable)
      .where(or(isNull(exportsTable.removedAt), inArray(exportsTable.id, [...counts.keys()])))
      .orderBy(asc(exportsTable.name), asc(exportsTable.id))
      .all();
    return rows.map((row) => this.toView(row, counts));
  }

  get(name: string): ExportView {
    const row = this.findServing(name);
    if (!row) throw notFound(`no export named "${name}"`);
    return this.toView(row, this.dataPlane.connections.countByExport());
  }

  async create(input: CreateExportInput, actor: Actor): Promise<ExportView> {
    this.refuseTakenName(input.name);
    if (input.cow && !configSafePathPattern.test(this.dataPlane.cowDir)) {
      throw badInput('cow', `copy-on-write diffs go to ${this.dataPlane.cowDir}, a path nbd-server's config would misread; run nbdmux with a data dir of A-Z a-z 0-9 . _ / + - only`);
    }
    const image = await pinImage(input.file, this.imageRoots, input.readonly);
    let row: ExportRow;
    let applied = false;
    try {
      row = this.db.transaction((tx) => {
        const inserted = tx
          .insert(exportsTable)
          .values({ name: input.name, file: image.realPath, readonly: input.readonly, cow: input.cow, allow: input.allow, cmdline: input.cmdline, size: image.size, fileIdentity: image.identity, createdAt: new Date().toISOString() })
          .returning()
          .get();
        this.dataPlane.applyExports(servedExports(tx, (id) => (id === inserted.id ? image.fd : this.pins.fdOf(id))));
        applied = true;
        return inserted;
      });
    } catch (err) {
      // A config may name the descriptor only until the committed set is applied again: once its
      // number is reused, a client would be handed whatever file got it.
      if (applied) this.dataPlane.applyExports(servedExports(this.db, (id) => this.pins.fdOf(id)));
      closeSync(image.fd);
      // Another request took the name while this one inspected the file.
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') this.refuseTakenName(input.name);
      throw err;
    }
    this.pins.hold(row.id, row.name, image);
    this.boot.registered(row.id);
    this.events.record('export.created', row.name, { id: row.id, file: row.file, readonly: row.readonly, cow: row.cow, allow: row.allow, cmdline: row.cmdline, size: row.size, ...actor });
    return this.toView(row, new Map());
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
      this.pins.release(serving.id);
      this.boot.removed(serving.id);
    }
    const draining = this.db
      .select({ id: exportsTable.id })
      .from(exportsTable)
      .where(and(eq(exportsTable.name, name), isNotNull(exportsTable.removedAt), inArray(exportsTable.id, [...counts.keys()])))
      .all()
      .map((row) => row.id);
    if (!serving && draining.length === 0) throw notFound(`no export named "${name}"`);
    const live = draining.reduce((sum, id) => sum + (counts.get(id) ?? 0), 0);
    if (!serving && !force) {
      throw conflict(`export "${name}" is already removed and draining ${live} connection(s); use force to cut them`);
    }
    const killed = force ? this.dataPlane.connections.kill(new Set(draining)) : 0;
    if (serving) this.events.record('export.removed', name, { id: serving.id, force, liveConnections: live, ...actor });
    return { name, killed, draining: force ? 0 : live };
  }

  private findServing(name: string): ExportRow | undefined {
    return this.db
      .select()
      .from(exportsTable)
      .where(and(eq(exportsTable.name, name), isNull(exportsTable.removedAt)))
      .get();
  }

  private toView({ fileIdentity: _pinned, bootInspection: _inspection, bootIdentity: _inspected, ...row }: ExportRow, counts: ReadonlyMap<number, number>): ExportView {
    return {
      ...row,
      state: row.removedAt === null ? 'serving' : 'draining',
      connections: counts.get(row.id) ?? 0,
      fileChange: row.removedAt === null ? this.pins.changeOf(row.id) : null,
      boot: this.boot.bootInfo(row),
    };
  }

  private refuseTakenName(name: string): void {
    if (this.findServing(name)) throw conflict(`an export named "${name}" already exists; remove it first or choose another name`);
  }
}
