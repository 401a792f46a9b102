import crypto from 'node:crypto';
import { asc, desc, eq } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import {
  discoveredMachinesTable,
  exportsTable,
  machinesTable,
  profilesTable,
  type DiscoveredMachineRow,
  type MachineRow,
  type ProfileRow,
} from '../db/schema.js';
import { badInput, conflict, notFound } from '../errors.js';
import { joinedCmdlineProblem } from '../rules/cmdline.js';
import type { EventLog } from '../events/event-log.js';
import type { Actor } from '../model/event-map.js';
import type { ConnectionTable, MachineExports } from '../supervisor/index.js';
import type { PinnedFiles } from '../exports/pinned-files.js';
import { servedMachineExports } from './served.js';
import type { CreateMachineInput, UpdateMachineInput } from './inputs.js';
import type { StateFiles } from './state-files.js';
import { planState } from './state-plan.js';
import { machineView, type MachineView } from './views.js';

export type { MachineView } from './views.js';
import { effectiveFields, type Effective } from '../profiles/fields.js';
import { profileById, profileNamed, sharedColumnsOf } from '../profiles/values.js';

/** What the machines need from the data plane. */
export interface MachineDataPlane {
  applyMachines(machines: MachineExports): void;
  readonly connections: Pick<ConnectionTable, 'list'>;
}

/**
 * The lab's machines and their rules: the one place they change. Changes run one at a time, since
 * one may make or delete a state file before its row commits.
 */
export class MachineRegistry {
  private queue: Promise<unknown> = Promise.resolve();
  /** Machines (by id) whose state file a change is rewriting: served to no one until it is done. */
  private readonly withheld = new Set<number>();

  constructor(
    private readonly db: Db,
    private readonly dataPlane: MachineDataPlane,
    private readonly events: EventLog,
    private readonly states: StateFiles,
    private readonly pins: Pick<PinnedFiles, 'holdBooted'>,
  ) {}

  list(): MachineView[] {
    const holding = this.holding();
    const profiles = new Map(
      this.db
        .select()
        .from(profilesTable)
        .all()
        .map((profile) => [profile.id, profile]),
    );
    return this.db
      .select()
      .from(machinesTable)
      .orderBy(asc(machinesTable.name))
      .all()
      .map((row) => this.toView(row, holding, profiles.get(row.profileId ?? -1)));
  }

  /** What the machine boots with, field by field: the one reading of its own fields and its profile's. */
  effective(row: MachineRow): Effective {
    return effectiveFields(row, profileById(this.db, row.profileId));
  }

  get(mac: string): MachineView {
    return this.toView(this.row(mac));
  }

  /** Unknown MACs that asked for a script, the latest first (at most 100). */
  discovered(): DiscoveredMachineRow[] {
    return this.db.select().from(discoveredMachinesTable).orderBy(desc(discoveredMachinesTable.lastSeenAt)).limit(100).all();
  }

  create(input: CreateMachineInput, actor: Actor): Promise<MachineView> {
    return this.serially(async () => {
      this.refuseTaken(input.mac, input.name);
      const profile = input.profile === null ? undefined : profileNamed(this.db, input.profile);
      const own = sharedColumnsOf(this.db, input) as Required<ReturnType<typeof sharedColumnsOf>>;
      const effective = effectiveFields(own, profile);
      this.refuseLongCmdline(effective);
      if (effective.persistent) await this.states.create(input.mac, effective.stateSize);
      let row: MachineRow;
      try {
        row = this.db.transaction((tx) => {
          tx.delete(discoveredMachinesTable).where(eq(discoveredMachinesTable.mac, input.mac)).run();
          return tx
            .insert(machinesTable)
            .values({
              mac: input.mac,
              name: input.name,
              profileId: profile?.id ?? null,
              ...own,
              machineId: newMachineId(),
              createdAt: new Date().toISOString(),
            })
            .returning()
            .all()[0]!;
        });
      } catch (err) {
        // Never served: nothing names its descriptor.
        this.states.discard(input.mac);
        this.states.closeRetired();
        throw err;
      }
      this.events.record('machine.created', this.exportName(effective.exportId), {
        mac: row.mac,
        name: row.name,
        persistent: effective.persistent,
        ...(profile && { profile: profile.name }),
        ...actor,
      });
      return this.toView(row);
    });
  }

  update(input: UpdateMachineInput, actor: Actor): Promise<MachineView> {
    return this.serially(async () => {
      const before = this.row(input.mac);
      const name = input.name ?? before.name;
      if (name !== before.name) this.refuseTaken(null, name);
      const profileId =
        input.profile === undefined ? before.profileId : input.profile === null ? null : profileNamed(this.db, input.profile).id;
      const after = { ...before, name, profileId, ...sharedColumnsOf(this.db, input) };
      const beforeEffective = this.effective(before);
      const afterEffective = this.effective(after);
      if (input.keepState && afterEffective.exportId === beforeEffective.exportId)
        throw badInput('keepState', 'only means something with a new "export"; drop it');
      const [moved] = await this.restate([{ row: before, before: beforeEffective, after: afterEffective }], input.keepState, () =>
        this.db
          .update(machinesTable)
          .set({
            name,
            profileId,
            exportId: after.exportId,
            cmdline: after.cmdline,
            persistent: after.persistent,
            stateSize: after.stateSize,
            userData: after.userData,
            networkConfig: after.networkConfig,
            vendorData: after.vendorData,
          })
          .where(eq(machinesTable.id, before.id))
          .run(),
      );
      const row = this.row(before.mac);
      // Names only: a cloud-init document may hold secrets, which events never carry.
      const changed = (
        ['name', 'profileId', 'exportId', 'cmdline', 'persistent', 'stateSize', 'userData', 'networkConfig', 'vendorData'] as const
      )
        .filter((field) => row[field] !== before[field])
        .map((field) => (field === 'exportId' ? 'export' : field === 'profileId' ? 'profile' : field));
      this.events.record('machine.updated', this.exportName(afterEffective.exportId), {
        mac: row.mac,
        name: row.name,
        changed,
        stateDiscarded: moved!.plan.discard,
        ...actor,
      });
      return this.toView(row);
    });
  }

  /**
   * Moves machines to new effective fields (their own change, or their profile's): their states
   * follow as planState says, every one checked before any is touched, then `write` commits the
   * rows. Refused whole if one machine's state would shrink, or change under a running system.
   */
  async restate<T extends { row: MachineRow; before: Effective; after: Effective }>(
    moves: readonly T[],
    keepState: boolean,
    write: () => void,
  ): Promise<Array<T & { plan: ReturnType<typeof planState> }>> {
    for (const move of moves) this.refuseLongCmdline(move.after, move.row.name);
    const planned = moves.map((move) => ({
      ...move,
      plan: planState(move.row.name, move.before, move.after, this.states.exists(move.row.mac), keepState),
    }));
    const rewritten = planned.filter(({ plan }) => plan.discard || plan.grow);
    const busy = rewritten.filter(({ row }) => this.attached(row));
    if (busy.length > 0) {
      const what = busy.map(({ row, plan }) => `${row.name} (its state would be ${plan.discard ? 'discarded' : 'grown'})`).join(', ');
      throw conflict(`attached, so their state cannot change under a running system: ${what}; power them off first`);
    }
    await this.changingStates(
      rewritten.map(({ row }) => row.mac),
      async () => {
        for (const { row, plan } of planned) {
          if (plan.discard) this.states.discard(row.mac);
          if (plan.grow) await this.states.grow(row.mac, plan.size);
          if (plan.create) await this.states.create(row.mac, plan.size);
        }
        write();
      },
    );
    return planned;
  }

  /** Changes run one at a time, machines' and profiles' alike: each may make or delete state files. */
  inTurn<T>(change: () => Promise<T>): Promise<T> {
    return this.serially(change);
  }

  delete(mac: string, actor: Actor): Promise<void> {
    return this.serially(async () => {
      const row = this.row(mac);
      this.refuseAttached(row, 'deleted');
      // The row first: if it cannot go, nothing did.
      this.db.delete(machinesTable).where(eq(machinesTable.id, row.id)).run();
      await this.changingStates([], () => Promise.resolve(this.states.discard(row.mac)));
      this.events.record('machine.deleted', null, { mac: row.mac, name: row.name, ...actor });
    });
  }

  /** Discards a persistent machine's state: its next boot starts from the image as it is. */
  reset(mac: string, actor: Actor): Promise<void> {
    return this.serially(async () => {
      const row = this.row(mac);
      const effective = this.effective(row);
      if (!effective.persistent)
        throw conflict(`machine ${row.name} is not persistent, so it has no state to reset`, { kind: 'make-persistent', mac: row.mac });
      this.refuseAttached(row, 'reset');
      await this.changingStates([row.mac], async () => {
        this.states.discard(row.mac);
        await this.states.create(row.mac, effective.stateSize);
      });
      this.events.record('machine.reset', this.exportName(effective.exportId), { mac: row.mac, name: row.name, ...actor });
    });
  }

  /** Hands the data plane every persistent machine's state and every machine's booted version, each for the address its current boot came from. */
  applyMachines(): void {
    this.dataPlane.applyMachines(servedMachineExports(this.db, this.states, this.pins, this.withheld));
    this.states.closeRetired();
  }

  find(mac: string): MachineRow | undefined {
    return this.db.select().from(machinesTable).where(eq(machinesTable.mac, mac)).get();
  }

  row(mac: string): MachineRow {
    const row = this.find(mac);
    if (!row) throw notFound(`no machine with MAC ${mac}`, { kind: 'list-machines' });
    return row;
  }

  /** Whether a live connection of its current boot holds its root or its state. */
  attached(row: Pick<MachineRow, 'id' | 'rootConnectionId'>, holding = this.holding()): boolean {
    return holding.machineIds.has(row.id) || (row.rootConnectionId !== null && holding.connectionIds.has(row.rootConnectionId));
  }

  /** The live connections, as `attached` asks about them: read once for a whole list. */
  private holding(): { machineIds: Set<number>; connectionIds: Set<number> } {
    const live = this.dataPlane.connections.list();
    return {
      machineIds: new Set(live.flatMap((conn) => (conn.machineId === null ? [] : [conn.machineId]))),
      connectionIds: new Set(live.map((conn) => conn.id)),
    };
  }

  toView(row: MachineRow, holding = this.holding(), profile: ProfileRow | undefined = profileById(this.db, row.profileId)): MachineView {
    return machineView(this.db, row, profile, this.attached(row, holding));
  }

  /** The name of the export an id names, removed or not; what its events are filed under. */
  exportName(exportId: number | null): string | null {
    return exportId === null
      ? null
      : (this.db.select({ name: exportsTable.name }).from(exportsTable).where(eq(exportsTable.id, exportId)).get()?.name ?? null);
  }

  /** A machine's arguments follow its export's on one kernel line, which has a bound. */
  private refuseLongCmdline({ exportId, cmdline }: Pick<Effective, 'exportId' | 'cmdline'>, name?: string): void {
    const exportCmdline =
      exportId === null
        ? undefined
        : this.db.select({ cmdline: exportsTable.cmdline }).from(exportsTable).where(eq(exportsTable.id, exportId)).get()?.cmdline;
    const problem = exportCmdline === undefined ? null : joinedCmdlineProblem(exportCmdline, cmdline);
    if (problem !== null) throw badInput('cmdline', name === undefined ? problem : `${name}: ${problem}`);
  }

  private refuseTaken(mac: string | null, name: string): void {
    if (mac !== null && this.db.select({ id: machinesTable.id }).from(machinesTable).where(eq(machinesTable.mac, mac)).get()) {
      throw conflict(`a machine with MAC ${mac} already exists`, { kind: 'edit-machine', mac });
    }
    if (this.db.select({ id: machinesTable.id }).from(machinesTable).where(eq(machinesTable.name, name)).get()) {
      throw conflict(`a machine named ${name} already exists: choose another name`);
    }
  }

  private refuseAttached(row: MachineRow, what: string): void {
    if (this.attached(row))
      throw conflict(
        `machine ${row.name} is attached (its boot's NBD connection is live), so its state cannot be ${what}: power it off first`,
      );
  }

  /**
   * Runs a change of state files, then hands the data plane the states as they are, whether the
   * change completed or failed midway (a discarded state must not stay served). The states of
   * `withhold` (MACs), whose files the change rewrites, are out of every config while it runs:
   * taken out in the same step as the caller's check that nothing holds them, so no client can
   * attach one between the check and the end of the change.
   */
  private async changingStates<T>(withhold: readonly string[], change: () => Promise<T>): Promise<T> {
    const withheld = withhold.flatMap((mac) => this.find(mac)?.id ?? []);
    for (const id of withheld) this.withheld.add(id);
    if (withheld.length > 0) this.applyMachines();
    try {
      return await change();
    } finally {
      for (const id of withheld) this.withheld.delete(id);
      this.applyMachines();
    }
  }

  private serially<T>(change: () => Promise<T>): Promise<T> {
    const result = this.queue.then(change);
    this.queue = result.catch(() => {});
    return result;
  }
}

/** `systemd.machine_id`: made once, when the machine is. */
export function newMachineId(): string {
  return crypto.randomBytes(16).toString('hex');
}
