import { eq } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { machineBmcsTable, machinesTable, type MachineBmcRow } from '../db/schema.js';
import { badInput } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import type { MachineRegistry } from '../machines/registry.js';
import type { Actor } from '../model/event-map.js';
import type { SetBmcInput } from './inputs.js';
import type { IpmiTarget } from './ipmitool.js';

/** A BMC as every view shows it: the password only as whether one is set. */
export type BmcView = Omit<MachineBmcRow, 'machineId' | 'password'> & { password: 'set' | 'not set' };

/** The machines' BMC settings: the one place they are written, and the one place the password is read (to hand ipmitool). */
export class BmcSettings {
  constructor(
    private readonly db: Db,
    private readonly events: EventLog,
    private readonly machines: Pick<MachineRegistry, 'row' | 'find'>,
  ) {}

  view(machineId: number): BmcView | null {
    const row = this.db.select().from(machineBmcsTable).where(eq(machineBmcsTable.machineId, machineId)).get();
    return row ? toView(row) : null;
  }

  /** Every BMC by machine id, read once for a whole list. */
  views(): Map<number, BmcView> {
    return new Map(
      this.db
        .select()
        .from(machineBmcsTable)
        .all()
        .map((row) => [row.machineId, toView(row)]),
    );
  }

  set(input: SetBmcInput, actor: Actor): BmcView {
    const machine = this.machines.row(input.mac);
    const before = this.db.select().from(machineBmcsTable).where(eq(machineBmcsTable.machineId, machine.id)).get();
    const password = input.password ?? before?.password;
    if (password === undefined) throw badInput('password', `${machine.name} has no BMC password yet: give one`);
    const values = {
      address: input.address,
      port: input.port,
      user: input.user,
      password,
      cipherSuite: input.cipherSuite,
      updatedAt: new Date().toISOString(),
    };
    const row = this.db
      .insert(machineBmcsTable)
      .values({ machineId: machine.id, ...values })
      .onConflictDoUpdate({ target: machineBmcsTable.machineId, set: values })
      .returning()
      .get();
    this.events.record('machine.bmc-set', null, {
      mac: machine.mac,
      name: machine.name,
      address: row.address,
      port: row.port,
      user: row.user,
      passwordChanged: input.password !== undefined && input.password !== before?.password,
      ...actor,
    });
    return toView(row);
  }

  remove(mac: string, actor: Actor): void {
    const machine = this.machines.row(mac);
    const removed = this.db.delete(machineBmcsTable).where(eq(machineBmcsTable.machineId, machine.id)).returning().all();
    if (removed.length > 0) this.events.record('machine.bmc-removed', null, { mac: machine.mac, name: machine.name, ...actor });
  }

  /** How to reach a machine's BMC; null when it has none. */
  target(machineId: number): IpmiTarget | null {
    const row = this.db.select().from(machineBmcsTable).where(eq(machineBmcsTable.machineId, machineId)).get();
    return row ? toTarget(row) : null;
  }

  /** Every machine with a BMC, for the poller. */
  targets(): Array<{ machineId: number; name: string; target: IpmiTarget }> {
    return this.db
      .select({ bmc: machineBmcsTable, name: machinesTable.name })
      .from(machineBmcsTable)
      .innerJoin(machinesTable, eq(machinesTable.id, machineBmcsTable.machineId))
      .all()
      .map(({ bmc, name }) => ({ machineId: bmc.machineId, name, target: toTarget(bmc) }));
  }
}

function toView({ machineId: _id, password, ...row }: MachineBmcRow): BmcView {
  return { ...row, password: password === '' ? 'not set' : 'set' };
}

function toTarget({ address, port, user, password, cipherSuite }: MachineBmcRow): IpmiTarget {
  return { address, port, user, password, cipherSuite };
}
