import { asc, eq, inArray } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { discoveredMachinesTable, exportsTable, machinesTable, profilesTable, type MachineRow, type ProfileRow } from '../db/schema.js';
import { badInput, conflict, notFound } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import { machineName } from '../machines/inputs.js';
import { newMachineId, type MachineRegistry } from '../machines/registry.js';
import type { StateFiles } from '../machines/state-files.js';
import type { Actor } from '../model/event-map.js';
import { joinedCmdlineProblem } from '../rules/cmdline.js';
import { expandNamePattern } from '../rules/name-pattern.js';
import {
  effectiveFields,
  fieldDefaults,
  sharedFields,
  viewField,
  withoutCloudInit,
  type CloudInitField,
  type SharedField,
} from './fields.js';
import type { AdoptInput, CreateProfileInput, UpdateProfileInput } from './inputs.js';
import { sharedColumnsOf, type SharedColumns } from './values.js';

/** A profile as the control plane shows it: its own fields (null: unset, its machines get the default) and its machines. */
export type ProfileView = Omit<ProfileRow, 'id' | 'exportId'> & {
  export: string | null;
  /** Its export was removed: its machines without their own boot nothing until it gets another. */
  exportProblem: string | null;
  machines: Array<{ mac: string; name: string }>;
  /** What its machines get for a field that neither they nor it set. */
  defaults: { cmdline: string; persistent: boolean; stateSize: number };
};

/**
 * What groups of machines share. A change reaches its machines at their next boot: their rows keep
 * their own fields, and what they boot is read through effectiveFields. Changes run in the
 * machines' turn, since they may make or delete the machines' state files.
 */
export class ProfileRegistry {
  constructor(
    private readonly db: Db,
    private readonly machines: MachineRegistry,
    private readonly events: EventLog,
    private readonly states: Pick<StateFiles, 'create' | 'discard' | 'closeRetired'>,
  ) {}

  /** Without cloud-init documents, which may hold secrets: `get` shows them. */
  list(): Array<Omit<ProfileView, CloudInitField>> {
    return this.db
      .select()
      .from(profilesTable)
      .orderBy(asc(profilesTable.name))
      .all()
      .map((row) => withoutCloudInit(this.toView(row)));
  }

  get(name: string): ProfileView {
    return this.toView(this.row(name));
  }

  create(input: CreateProfileInput, actor: Actor): Promise<ProfileView> {
    return this.machines.inTurn(() => {
      if (this.find(input.name)) throw conflict(`a profile named ${input.name} already exists: choose another name`);
      const shared = sharedColumnsOf(this.db, input) as SharedColumns;
      this.refuseLongCmdline(shared);
      const row = this.db
        .insert(profilesTable)
        .values({ name: input.name, ...shared, createdAt: new Date().toISOString() })
        .returning()
        .all()[0]!;
      this.events.record('profile.created', this.machines.exportName(row.exportId), { name: row.name, ...actor });
      return Promise.resolve(this.toView(row));
    });
  }

  /**
   * Changes what its machines get at their next boot (nothing live: a booted machine keeps the
   * version its boot was written for). Their states follow as their own change would make them,
   * every machine checked before any is touched.
   */
  update(input: UpdateProfileInput, actor: Actor): Promise<ProfileView> {
    return this.machines.inTurn(async () => {
      const before = this.row(input.name);
      const given = sharedColumnsOf(this.db, input);
      const after: ProfileRow = { ...before, ...given };
      this.refuseLongCmdline(after);
      const cleared = input.allMachines ? (Object.keys(given) as SharedField[]) : [];
      if (input.allMachines && cleared.length === 0) throw badInput('allMachines', 'clears the fields this change gives: give one');
      const clearedOwn = Object.fromEntries(cleared.map((field) => [field, null]));
      const moves = this.members(before.id).map((row) => {
        const next = { ...row, ...clearedOwn };
        return { row, next, before: effectiveFields(row, before), after: effectiveFields(next, after) };
      });
      const moved = await this.machines.restate(moves, input.keepState, () =>
        this.db.transaction((tx) => {
          tx.update(profilesTable).set(given).where(eq(profilesTable.id, before.id)).run();
          if (cleared.length > 0) tx.update(machinesTable).set(clearedOwn).where(eq(machinesTable.profileId, before.id)).run();
        }),
      );
      const changed = sharedFields.filter((field) => after[field] !== before[field]).map(viewField);
      const differs = (a: object, b: object) => sharedFields.some((field) => a[field as keyof object] !== b[field as keyof object]);
      this.events.record('profile.updated', this.machines.exportName(after.exportId), {
        name: before.name,
        changed,
        machines: moved.filter((move) => differs(move.before, move.after)).length,
        ...(cleared.length > 0 && { cleared: cleared.map(viewField) }),
        stateDiscarded: moved.filter((move) => move.plan.discard).map((move) => move.row.name),
        ...actor,
      });
      return this.get(before.name);
    });
  }

  /** Refused while machines take fields from it: each must leave it first, so none boots something it did not choose. */
  remove(name: string, actor: Actor): Promise<void> {
    return this.machines.inTurn(() => {
      const row = this.row(name);
      const members = this.members(row.id);
      if (members.length > 0) {
        throw conflict(`profile ${name} is used by ${members.map((m) => `${m.name} (${m.mac})`).join(', ')}`, {
          kind: 'leave-profile',
          name,
          macs: members.map((m) => m.mac),
        });
      }
      this.db.delete(profilesTable).where(eq(profilesTable.id, row.id)).run();
      this.events.record('profile.removed', null, { name, ...actor });
      return Promise.resolve();
    });
  }

  /**
   * Makes discovered MACs machines of the profile, named from `names` in the order they were
   * discovered: all of them or, when a name is short or taken, none.
   */
  adopt(input: AdoptInput, actor: Actor): Promise<{ profile: ProfileView; adopted: Array<{ mac: string; name: string }> }> {
    return this.machines.inTurn(async () => {
      const profile = this.row(input.name);
      const candidates = this.discoveredInOrder(input.macs);
      if (candidates.length === 0)
        throw badInput('macs', 'no discovered MAC to adopt: a machine shows up once it asks for a boot script', { kind: 'list-machines' });
      const expanded = expandNamePattern(input.names);
      if (typeof expanded === 'string') throw badInput('names', expanded);
      if (expanded.length < candidates.length)
        throw badInput('names', `${input.names} gives ${expanded.length} name(s) for ${candidates.length} machines: widen its range`);
      const names = expanded.slice(0, candidates.length);
      for (const name of names) {
        const problem = machineName.safeParse(name).error?.issues[0]?.message;
        if (problem !== undefined) throw badInput('names', `${name} ${problem}`);
      }
      const taken = this.db.select({ name: machinesTable.name }).from(machinesTable).where(inArray(machinesTable.name, names)).all();
      if (taken.length > 0) throw conflict(`machines named ${taken.map((t) => t.name).join(', ')} already exist: choose other names`);
      const { persistent, stateSize } = effectiveFields(unsetFields(), profile);
      const made: string[] = [];
      try {
        if (persistent) {
          for (const { mac } of candidates) {
            made.push(mac);
            await this.states.create(mac, stateSize);
          }
        }
        this.db.transaction((tx) => {
          const now = new Date().toISOString();
          tx.delete(discoveredMachinesTable)
            .where(
              inArray(
                discoveredMachinesTable.mac,
                candidates.map((c) => c.mac),
              ),
            )
            .run();
          tx.insert(machinesTable)
            .values(
              candidates.map(({ mac }, i) => ({ mac, name: names[i]!, profileId: profile.id, machineId: newMachineId(), createdAt: now })),
            )
            .run();
        });
      } catch (err) {
        // Never served: nothing names their descriptors.
        for (const mac of made) this.states.discard(mac);
        this.states.closeRetired();
        throw err;
      }
      const machines = candidates.map(({ mac }, i) => ({ mac, name: names[i]! }));
      this.events.record('profile.adopted', this.machines.exportName(profile.exportId), { name: profile.name, machines, ...actor });
      return { profile: this.get(profile.name), adopted: machines };
    });
  }

  /** The discovered MACs asked for (all of them when none is), first discovered first; 400 for one not discovered. */
  private discoveredInOrder(macs: readonly string[]): Array<{ mac: string }> {
    const all = this.db
      .select({ mac: discoveredMachinesTable.mac })
      .from(discoveredMachinesTable)
      .orderBy(asc(discoveredMachinesTable.firstSeenAt), asc(discoveredMachinesTable.mac))
      .all();
    if (macs.length === 0) return all;
    const asked = new Set(macs);
    if (asked.size !== macs.length) throw badInput('macs', 'names a MAC twice');
    for (const mac of asked) {
      if (all.some((d) => d.mac === mac)) continue;
      if (this.machines.find(mac)) throw conflict(`a machine with MAC ${mac} already exists`, { kind: 'edit-machine', mac });
      throw badInput('macs', `${mac} has not asked to boot, so it is not among the discovered MACs`, { kind: 'list-machines' });
    }
    return all.filter((d) => asked.has(d.mac));
  }

  private members(profileId: number): MachineRow[] {
    return this.db.select().from(machinesTable).where(eq(machinesTable.profileId, profileId)).orderBy(asc(machinesTable.name)).all();
  }

  private find(name: string): ProfileRow | undefined {
    return this.db.select().from(profilesTable).where(eq(profilesTable.name, name)).get();
  }

  private row(name: string): ProfileRow {
    const row = this.find(name);
    if (!row) throw notFound(`no profile named ${name}`, { kind: 'list-profiles' });
    return row;
  }

  /** A profile's arguments follow its export's on one kernel line, as a machine's do. */
  private refuseLongCmdline({ exportId, cmdline }: Pick<ProfileRow, 'exportId' | 'cmdline'>): void {
    if (exportId === null || cmdline === null) return;
    const exportCmdline = this.db.select({ cmdline: exportsTable.cmdline }).from(exportsTable).where(eq(exportsTable.id, exportId)).get()!
      .cmdline;
    const problem = joinedCmdlineProblem(exportCmdline, cmdline);
    if (problem !== null) throw badInput('cmdline', problem);
  }

  private toView({ id, exportId, ...row }: ProfileRow): ProfileView {
    const exp =
      exportId === null
        ? undefined
        : this.db
            .select({ name: exportsTable.name, removedAt: exportsTable.removedAt })
            .from(exportsTable)
            .where(eq(exportsTable.id, exportId))
            .get();
    const removed = exp !== undefined && exp.removedAt !== null;
    return {
      ...row,
      export: exp === undefined || removed ? null : exp.name,
      exportProblem: removed ? `its export ${exp.name} was removed at ${exp.removedAt}: set another one` : null,
      machines: this.members(id).map(({ mac, name }) => ({ mac, name })),
      defaults: { cmdline: fieldDefaults.cmdline, persistent: fieldDefaults.persistent, stateSize: fieldDefaults.stateSize },
    };
  }
}

/** A machine that sets nothing itself. */
function unsetFields(): Record<SharedField, null> {
  return Object.fromEntries(sharedFields.map((field) => [field, null])) as Record<SharedField, null>;
}
