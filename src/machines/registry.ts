import crypto from 'node:crypto';
import { and, asc, desc, eq, isNull } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { discoveredMachinesTable, exportsTable, machinesTable, type DiscoveredMachineRow, type MachineRow } from '../db/schema.js';
import { badInput, conflict, notFound } from '../errors.js';
import { joinedCmdlineProblem } from '../rules/cmdline.js';
import { stateExportName } from '../rules/names.js';
import type { EventLog } from '../events/event-log.js';
import type { Actor } from '../model/event-map.js';
import type { ConnectionTable, MachineExports } from '../supervisor/index.js';
import type { PinnedFiles } from '../exports/pinned-files.js';
import { servedMachineExports } from './served.js';
import { versionById } from '../exports/versions.js';
import type { CreateMachineInput, UpdateMachineInput } from './inputs.js';
import type { StateFiles } from './state-files.js';

/** A machine as the control plane shows it. */
export type MachineView = Omit<MachineRow, 'id' | 'exportId' | 'rootConnectionId' | 'bootedVersionId'> & {
  /** The version of its export its current boot was written for: what it reads, on a reconnect too. */
  bootedVersion: number | null;
  /** The export it boots; null when none is set or the one set was removed (`exportProblem` says which). */
  export: string | null;
  exportProblem: string | null;
  /** Its state export's name (`nbdroot.state=`), while it is persistent. */
  stateExport: string | null;
  /** A live NBD connection of its current boot holds its root or its state. */
  attached: boolean;
};

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
    return this.db
      .select()
      .from(machinesTable)
      .orderBy(asc(machinesTable.name))
      .all()
      .map((row) => this.toView(row, holding));
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
      const exportId = input.export === null ? null : this.exportIdOf(input.export);
      this.refuseLongCmdline(exportId, input.cmdline);
      if (input.persistent) await this.states.create(input.mac, input.stateSize);
      let row: MachineRow;
      try {
        row = this.db.transaction((tx) => {
          tx.delete(discoveredMachinesTable).where(eq(discoveredMachinesTable.mac, input.mac)).run();
          return tx
            .insert(machinesTable)
            .values({
              mac: input.mac,
              name: input.name,
              exportId,
              cmdline: input.cmdline,
              persistent: input.persistent,
              stateSize: input.stateSize,
              machineId: crypto.randomBytes(16).toString('hex'),
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
      this.events.record('machine.created', input.export, { mac: row.mac, name: row.name, persistent: row.persistent, ...actor });
      return this.toView(row);
    });
  }

  update(input: UpdateMachineInput, actor: Actor): Promise<MachineView> {
    return this.serially(async () => {
      const before = this.row(input.mac);
      const name = input.name ?? before.name;
      if (name !== before.name) this.refuseTaken(null, name);
      const exportId = input.export === undefined ? before.exportId : input.export === null ? null : this.exportIdOf(input.export);
      this.refuseLongCmdline(exportId, input.cmdline ?? before.cmdline);
      const persistent = input.persistent ?? before.persistent;
      const stateSize = input.stateSize ?? before.stateSize;
      const hasState = before.persistent && this.states.exists(before.mac);
      // What happens to the state: an upper layer belongs to the lower layer it was written over.
      const exportChanged = exportId !== before.exportId;
      const discard = hasState && (!persistent || (exportChanged && !input.keepState));
      const grow = hasState && !discard && stateSize > before.stateSize;
      if (hasState && !discard && stateSize < before.stateSize) {
        throw conflict(
          `stateSize: the state filesystem of ${before.name} cannot shrink from ${before.stateSize} to ${stateSize} bytes; reset the machine (discarding its state) or keep the size`,
        );
      }
      if (input.keepState && !exportChanged) throw badInput('keepState', 'only means something with a new "export"; drop it');
      if ((discard || grow) && this.attached(before)) {
        throw conflict(
          `machine ${before.name} is attached: ${discard ? 'its state would be discarded' : 'its state filesystem would grow'} under a running system; power it off first`,
        );
      }
      const row = await this.changingStates(discard || grow ? before.mac : null, async () => {
        if (discard) this.states.discard(before.mac);
        if (grow) await this.states.grow(before.mac, stateSize);
        if (persistent && (discard || !hasState)) await this.states.create(before.mac, stateSize);
        return this.db
          .update(machinesTable)
          .set({ name, exportId, cmdline: input.cmdline ?? before.cmdline, persistent, stateSize })
          .where(eq(machinesTable.id, before.id))
          .returning()
          .all()[0]!;
      });
      const changed = (['name', 'exportId', 'cmdline', 'persistent', 'stateSize'] as const)
        .filter((field) => row[field] !== before[field])
        .map((field) => (field === 'exportId' ? 'export' : field));
      this.events.record('machine.updated', this.exportName(row.exportId), {
        mac: row.mac,
        name: row.name,
        changed,
        stateDiscarded: discard,
        ...actor,
      });
      return this.toView(row);
    });
  }

  delete(mac: string, actor: Actor): Promise<void> {
    return this.serially(async () => {
      const row = this.row(mac);
      this.refuseAttached(row, 'deleted');
      // The row first: if it cannot go, nothing did.
      this.db.delete(machinesTable).where(eq(machinesTable.id, row.id)).run();
      await this.changingStates(null, () => Promise.resolve(this.states.discard(row.mac)));
      this.events.record('machine.deleted', null, { mac: row.mac, name: row.name, ...actor });
    });
  }

  /** Discards a persistent machine's state: its next boot starts from the image as it is. */
  reset(mac: string, actor: Actor): Promise<void> {
    return this.serially(async () => {
      const row = this.row(mac);
      if (!row.persistent)
        throw conflict(`machine ${row.name} is not persistent, so it has no state to reset`, { kind: 'make-persistent', mac: row.mac });
      this.refuseAttached(row, 'reset');
      await this.changingStates(row.mac, async () => {
        this.states.discard(row.mac);
        await this.states.create(row.mac, row.stateSize);
      });
      this.events.record('machine.reset', this.exportName(row.exportId), { mac: row.mac, name: row.name, ...actor });
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

  toView({ id: _id, exportId, rootConnectionId: _root, bootedVersionId, ...row }: MachineRow, holding = this.holding()): MachineView {
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
      stateExport: row.persistent ? stateExportName(row.mac) : null,
      bootedVersion: versionById(this.db, bootedVersionId)?.version ?? null,
      attached: this.attached({ id: _id, rootConnectionId: _root }, holding),
    };
  }

  private exportIdOf(name: string): number {
    const exp = this.db
      .select({ id: exportsTable.id })
      .from(exportsTable)
      .where(and(eq(exportsTable.name, name), isNull(exportsTable.removedAt)))
      .get();
    if (!exp) throw badInput('export', `no export "${name}"`, { kind: 'list-exports' });
    return exp.id;
  }

  /** The name of the export an id names, removed or not; what its events are filed under. */
  exportName(exportId: number | null): string | null {
    return exportId === null
      ? null
      : (this.db.select({ name: exportsTable.name }).from(exportsTable).where(eq(exportsTable.id, exportId)).get()?.name ?? null);
  }

  /** A machine's arguments follow its export's on one kernel line, which has a bound. */
  private refuseLongCmdline(exportId: number | null, cmdline: string): void {
    const exportCmdline =
      exportId === null
        ? undefined
        : this.db.select({ cmdline: exportsTable.cmdline }).from(exportsTable).where(eq(exportsTable.id, exportId)).get()?.cmdline;
    const problem = exportCmdline === undefined ? null : joinedCmdlineProblem(exportCmdline, cmdline);
    if (problem !== null) throw badInput('cmdline', problem);
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
   * change completed or failed midway (a discarded state must not stay served). The state of
   * `withhold` (a MAC), whose file the change rewrites, is out of every config while it runs:
   * taken out in the same step as the caller's check that nothing holds it, so no client can
   * attach it between the check and the end of the change.
   */
  private async changingStates<T>(withhold: string | null, change: () => Promise<T>): Promise<T> {
    const withheld = withhold === null ? undefined : this.find(withhold)?.id;
    if (withheld !== undefined) {
      this.withheld.add(withheld);
      this.applyMachines();
    }
    try {
      return await change();
    } finally {
      if (withheld !== undefined) this.withheld.delete(withheld);
      this.applyMachines();
    }
  }

  private serially<T>(change: () => Promise<T>): Promise<T> {
    const result = this.queue.then(change);
    this.queue = result.catch(() => {});
    return result;
  }
}
