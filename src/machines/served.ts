import { and, eq, isNotNull, isNull, ne } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportsTable, exportVersionsTable, machinesTable, profilesTable } from '../db/schema.js';
import { effectiveFields } from '../profiles/fields.js';
import type { BootedFile, PinnedFiles } from '../exports/pinned-files.js';
import { admits } from '../rules/allow-list.js';
import { stateExportName } from '../rules/names.js';
import type { MachineExports, ServedState } from '../supervisor/index.js';
import type { StateFiles } from './state-files.js';

/**
 * What the machines add to the configs of their boot addresses: each persistent machine's state,
 * and for every machine the version of its export its current boot was written for.
 */
export function servedMachineExports(
  db: Pick<Db, 'select'>,
  states: Pick<StateFiles, 'fdOf'>,
  pins: Pick<PinnedFiles, 'holdBooted'>,
  withheld: ReadonlySet<number> = new Set(),
): MachineExports {
  const booted = bootedVersions(db);
  const fds = pins.holdBooted(booted.map(({ file }) => file));
  return {
    states: servedStates(db, states).filter((state) => !withheld.has(state.machineId)),
    booted: booted.map(({ client, version, file }) => ({
      client,
      exportId: file.exportId,
      versionId: file.versionId,
      version,
      fd: fds.get(file.versionId)!,
    })),
  };
}

/**
 * The persistent machines' state exports, each for the address its current boot came from, while
 * the machine has an export, not removed, whose allow list admits that address.
 */
function servedStates(db: Pick<Db, 'select'>, states: Pick<StateFiles, 'fdOf'>): ServedState[] {
  const profiles = new Map(
    db
      .select()
      .from(profilesTable)
      .all()
      .map((profile) => [profile.id, profile]),
  );
  const serving = new Map(
    db
      .select({ id: exportsTable.id, allow: exportsTable.allow })
      .from(exportsTable)
      .where(isNull(exportsTable.removedAt))
      .all()
      .map((exp) => [exp.id, exp]),
  );
  return db
    .select()
    .from(machinesTable)
    .where(isNotNull(machinesTable.address))
    .all()
    .flatMap((machine) => {
      // Persistent, and its export, by itself or its profile: the fields its boot was given.
      const { persistent, exportId } = effectiveFields(machine, profiles.get(machine.profileId ?? -1));
      const exp = exportId === null ? undefined : serving.get(exportId);
      if (!persistent || exp === undefined) return [];
      const fd = states.fdOf(machine.mac);
      if (fd === undefined || !admits(exp, machine.address!)) return [];
      return [
        {
          machineId: machine.id,
          machine: machine.name,
          name: stateExportName(machine.mac),
          fd,
          client: machine.address!,
          exportId: exp.id,
        },
      ];
    });
}

/**
 * The version each machine's current boot was written for, with the address it boots from: held
 * until its next boot, its removal, a failed boot, or its export's removal. A machine whose root
 * connection closed keeps it: it may be reconnecting.
 */
function bootedVersions(db: Pick<Db, 'select'>): { client: string; version: number; file: BootedFile }[] {
  return db
    .select({
      client: machinesTable.address,
      versionId: exportVersionsTable.id,
      version: exportVersionsTable.version,
      file: exportVersionsTable.file,
      fileIdentity: exportVersionsTable.fileIdentity,
      exp: { id: exportsTable.id, name: exportsTable.name, allow: exportsTable.allow },
    })
    .from(machinesTable)
    .innerJoin(exportVersionsTable, eq(exportVersionsTable.id, machinesTable.bootedVersionId))
    .innerJoin(exportsTable, and(eq(exportsTable.id, exportVersionsTable.exportId), isNull(exportsTable.removedAt)))
    .where(and(isNotNull(machinesTable.address), ne(machinesTable.stage, 'failed'), eq(exportVersionsTable.state, 'ready')))
    .all()
    .flatMap(({ client, versionId, version, file, fileIdentity, exp }) =>
      client === null || file === null || !admits(exp, client)
        ? []
        : [{ client, version, file: { versionId, exportId: exp.id, name: exp.name, file, fileIdentity } }],
    );
}
