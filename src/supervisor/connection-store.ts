import { and, desc, eq, isNull } from 'drizzle-orm';
import type { DataDirSpace } from '../db/data-dir-space.js';
import type { Db } from '../db/open.js';
import { connectionsTable, exportsTable, exportVersionsTable, type ConnectionRow } from '../db/schema.js';

/** A connection's row, with the name of the export it chose. */
export interface StoredConnection {
  connection: ConnectionRow;
  exportName: string | null;
}

/**
 * The connections table, kept so that a restarted daemon can find its serving processes, and
 * what the supervisor reads of the exports table. Every write is skipped while the data dir is
 * full (see DataDirSpace.tryWrite): a booting machine is served all the same, without a row.
 */
export class ConnectionStore {
  constructor(
    private readonly db: Db,
    private readonly space: DataDirSpace,
  ) {}

  /** The new connection's row; undefined when the data dir is full. */
  insert(values: Pick<ConnectionRow, 'clientAddress' | 'clientPort' | 'openedAt'>): ConnectionRow | undefined {
    // `.all()`: see EventLog.record, an unfinished RETURNING statement blocks the WAL checkpoint.
    return this.space.tryWrite(() => this.db.insert(connectionsTable).values(values).returning().all()[0]!);
  }

  update(id: number, values: Partial<Omit<ConnectionRow, 'id'>>): void {
    this.space.tryWrite(() => this.db.update(connectionsTable).set(values).where(eq(connectionsTable.id, id)).run());
  }

  /** Rows of connections not known to have ended. */
  unclosed(): ConnectionRow[] {
    return this.db.select().from(connectionsTable).where(isNull(connectionsTable.closedAt)).all();
  }

  /** The newest rows first. */
  recent(limit: number, unclosedOnly: boolean): StoredConnection[] {
    return this.db
      .select({ connection: connectionsTable, exportName: exportsTable.name })
      .from(connectionsTable)
      .leftJoin(exportsTable, eq(exportsTable.id, connectionsTable.exportId))
      .where(unclosedOnly ? isNull(connectionsTable.closedAt) : undefined)
      .orderBy(desc(connectionsTable.id))
      .limit(limit)
      .all();
  }

  /** An export's name and allow list, removed or not; undefined for an id never written. */
  exportById(exportId: number): { name: string; allow: string[] } | undefined {
    return this.db
      .select({ name: exportsTable.name, allow: exportsTable.allow })
      .from(exportsTable)
      .where(eq(exportsTable.id, exportId))
      .get();
  }

  isVersionOf(versionId: number, exportId: number): boolean {
    const row = this.db
      .select({ id: exportVersionsTable.id })
      .from(exportVersionsTable)
      .where(and(eq(exportVersionsTable.id, versionId), eq(exportVersionsTable.exportId, exportId)))
      .get();
    return row !== undefined;
  }
}
