import { eq } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable, type MachineRow, type ProfileRow } from '../db/schema.js';
import { versionById } from '../exports/versions.js';
import { effectiveFields, viewSources, type FieldSource, type ViewField } from '../profiles/fields.js';
import { stateExportName } from '../rules/names.js';

/** A machine as the control plane shows it. */
export type MachineView = Omit<
  MachineRow,
  'id' | 'profileId' | 'exportId' | 'cmdline' | 'persistent' | 'stateSize' | 'rootConnectionId' | 'bootedVersionId'
> & {
  /** The profile it takes the fields it does not set itself from. */
  profile: string | null;
  /** Effective, as its next boot gets them: its own, else its profile's, else the default (`sources` says which). */
  cmdline: string;
  persistent: boolean;
  stateSize: number;
  sources: Record<ViewField, FieldSource>;
  /** The version of its export its current boot was written for: what it reads, on a reconnect too. */
  bootedVersion: number | null;
  /** The export it boots (effective); null when none is set or the one set was removed (`exportProblem` says which). */
  export: string | null;
  exportProblem: string | null;
  /** Its state export's name (`nbdroot.state=`), while it is persistent. */
  stateExport: string | null;
  /** A live NBD connection of its current boot holds its root or its state. */
  attached: boolean;
  /** Its own cloud-init documents (`sources` says whether its profile's apply): never in a list. */
  userData: string | null;
  networkConfig: string | null;
  vendorData: string | null;
};

/** A machine's row as its view: each shared field as its next boot gets it, with where it came from. */
export function machineView(
  db: Pick<Db, 'select'>,

  {
    id: _id,
    profileId: _profileId,
    exportId: _own,
    cmdline: _cmdline,
    persistent: _persistent,
    stateSize: _size,
    rootConnectionId: _root,
    bootedVersionId,
    ...row
  }: MachineRow,
  profile: ProfileRow | undefined,
  attached: boolean,
): MachineView {
  const { userData, networkConfig, vendorData } = row;
  const own = { exportId: _own, cmdline: _cmdline, persistent: _persistent, stateSize: _size, userData, networkConfig, vendorData };
  const effective = effectiveFields(own, profile);
  const { exportId, sources } = effective;
  const exp =
    exportId === null
      ? undefined
      : db
          .select({ name: exportsTable.name, removedAt: exportsTable.removedAt })
          .from(exportsTable)
          .where(eq(exportsTable.id, exportId))
          .get();
  const removed = exp !== undefined && exp.removedAt !== null;
  const whose = sources.exportId === 'profile' ? `its profile ${profile!.name}'s export` : 'its export';
  return {
    ...row,
    profile: profile?.name ?? null,
    cmdline: effective.cmdline,
    persistent: effective.persistent,
    stateSize: effective.stateSize,
    sources: viewSources(sources),
    export: exp === undefined || removed ? null : exp.name,
    exportProblem: removed ? `${whose} ${exp.name} was removed at ${exp.removedAt}: set another one` : null,
    stateExport: effective.persistent ? stateExportName(row.mac) : null,
    bootedVersion: versionById(db, bootedVersionId)?.version ?? null,
    attached,
  };
}
