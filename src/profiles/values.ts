import { and, eq, isNull } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable, profilesTable, type ProfileRow } from '../db/schema.js';
import { badInput } from '../errors.js';
import { sharedFields, type SharedField } from './fields.js';

type ViewInput = {
  export?: string | null;
  cmdline?: string | null;
  persistent?: boolean | null;
  stateSize?: number | null;
  userData?: string | null;
  networkConfig?: string | null;
  vendorData?: string | null;
};
export type SharedColumns = { [F in SharedField]: ProfileRow[F] };

/** The shared fields an input gives, as columns (an export by id; null: unset); a field not given is left out. */
export function sharedColumnsOf(db: Pick<Db, 'select'>, input: ViewInput): Partial<SharedColumns> {
  const columns: Record<string, unknown> = {};
  for (const field of sharedFields) {
    if (field === 'exportId') {
      if (input.export !== undefined) columns.exportId = input.export === null ? null : exportIdOf(db, input.export);
    } else if (input[field] !== undefined) columns[field] = input[field];
  }
  return columns;
}

/** The id of the export serving under `name`; 400 on `field` when there is none. */
export function exportIdOf(db: Pick<Db, 'select'>, name: string): number {
  const exp = db
    .select({ id: exportsTable.id })
    .from(exportsTable)
    .where(and(eq(exportsTable.name, name), isNull(exportsTable.removedAt)))
    .get();
  if (!exp) throw badInput('export', `no export "${name}"`, { kind: 'list-exports' });
  return exp.id;
}

/** The profile named `name`; 400 on `profile` when there is none (it is an input of the change, as an export is). */
export function profileNamed(db: Pick<Db, 'select'>, name: string): ProfileRow {
  const row = db.select().from(profilesTable).where(eq(profilesTable.name, name)).get();
  if (!row) throw badInput('profile', `no profile "${name}"`, { kind: 'list-profiles' });
  return row;
}

export function profileById(db: Pick<Db, 'select'>, id: number | null): ProfileRow | undefined {
  return id === null ? undefined : db.select().from(profilesTable).where(eq(profilesTable.id, id)).get();
}
