import { eq } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { machineBmcsTable, machinesTable, profileBmcsTable, profilesTable, type MachineBmcRow, type ProfileBmcRow } from '../db/schema.js';
import { badInput, notFound } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import type { MachineRegistry } from '../machines/registry.js';
import type { Actor } from '../model/event-map.js';
import type { SetBmcInput, SetProfileBmcInput } from './inputs.js';
import type { IpmiTarget } from './ipmitool.js';

/** Where a machine's BMC user or password comes from: itself, its profile, or nowhere yet. */
export type CredentialSource = 'machine' | 'profile' | 'none';

/**
 * A machine's BMC as every view shows it: the user and password it uses (its own, else its
 * profile's), the password only as whether one is set, and where each came from.
 */
export type BmcView = Omit<MachineBmcRow, 'machineId' | 'user' | 'password'> & {
  user: string | null;
  password: 'set' | 'not set';
  sources: { user: CredentialSource; password: CredentialSource };
};

/** The credentials a profile gives its machines, the password only as whether one is set. */
export type ProfileBmcView = Omit<ProfileBmcRow, 'profileId' | 'password'> & { password: 'set' | 'not set' };

/** How to reach a machine's BMC, or what it still lacks. */
export type BmcTarget = { target: IpmiTarget } | { missing: Array<'user' | 'password'> };

/**
 * The BMC settings of machines and profiles: the one place they are written, and the one place a
 * password is read (to hand ipmitool). A machine's own user and password win, field by field.
 */
export class BmcSettings {
  constructor(
    private readonly db: Db,
    private readonly events: EventLog,
    private readonly machines: Pick<MachineRegistry, 'row' | 'find'>,
  ) {}

  view(machineId: number): BmcView | null {
    return this.views().get(machineId) ?? null;
  }

  /** Every BMC by machine id, read once for a whole list. */
  views(): Map<number, BmcView> {
    return new Map(this.joined().map(({ bmc, shared }) => [bmc.machineId, toView(bmc, shared)]));
  }

  set(input: SetBmcInput, actor: Actor): BmcView {
    const machine = this.machines.row(input.mac);
    const before = this.db.select().from(machineBmcsTable).where(eq(machineBmcsTable.machineId, machine.id)).get();
    const password = input.password === undefined ? (before?.password ?? null) : input.password;
    // A machine in a profile may leave both to it, even before the profile has them (its power actions say what is missing).
    if (machine.profileId === null) {
      if (password === null) throw badInput('password', `${machine.name} has no BMC password yet: give one, or put it in a profile`);
      if (input.user === null) throw badInput('user', `${machine.name} is in no profile to take a BMC user from: give one`);
    }
    const values = {
      address: input.address,
      port: input.port,
      user: input.user,
      password,
      cipherSuite: input.cipherSuite,
      updatedAt: new Date().toISOString(),
    };
    this.db
      .insert(machineBmcsTable)
      .values({ machineId: machine.id, ...values })
      .onConflictDoUpdate({ target: machineBmcsTable.machineId, set: values })
      .run();
    this.events.record('machine.bmc-set', null, {
      mac: machine.mac,
      name: machine.name,
      address: values.address,
      port: values.port,
      user: values.user,
      passwordChanged: input.password !== undefined && input.password !== before?.password,
      ...actor,
    });
    return this.view(machine.id)!;
  }

  remove(mac: string, actor: Actor): void {
    const machine = this.machines.row(mac);
    const removed = this.db.delete(machineBmcsTable).where(eq(machineBmcsTable.machineId, machine.id)).returning().all();
    if (removed.length > 0) this.events.record('machine.bmc-removed', null, { mac: machine.mac, name: machine.name, ...actor });
  }

  /** Each profile's shared credentials by profile name, read once for a whole list. */
  profileViews(): Map<string, ProfileBmcView> {
    return new Map(
      this.db
        .select({ shared: profileBmcsTable, name: profilesTable.name })
        .from(profileBmcsTable)
        .innerJoin(profilesTable, eq(profilesTable.id, profileBmcsTable.profileId))
        .all()
        .map(({ shared, name }) => [name, toProfileView(shared)]),
    );
  }

  setProfile(input: SetProfileBmcInput, actor: Actor): ProfileBmcView {
    const profile = this.profile(input.name);
    const before = this.db.select().from(profileBmcsTable).where(eq(profileBmcsTable.profileId, profile.id)).get();
    const password = input.password ?? before?.password;
    if (password === undefined) throw badInput('password', `profile ${profile.name} has no BMC password yet: give one`);
    const values = { user: input.user, password, updatedAt: new Date().toISOString() };
    const row = this.db
      .insert(profileBmcsTable)
      .values({ profileId: profile.id, ...values })
      .onConflictDoUpdate({ target: profileBmcsTable.profileId, set: values })
      .returning()
      .get();
    this.events.record('profile.bmc-set', null, {
      name: profile.name,
      user: row.user,
      passwordChanged: input.password !== undefined && input.password !== before?.password,
      ...actor,
    });
    return toProfileView(row);
  }

  removeProfile(name: string, actor: Actor): void {
    const profile = this.profile(name);
    const removed = this.db.delete(profileBmcsTable).where(eq(profileBmcsTable.profileId, profile.id)).returning().all();
    if (removed.length > 0) this.events.record('profile.bmc-removed', null, { name: profile.name, ...actor });
  }

  /** How to reach a machine's BMC, or what it lacks; null when it has none. */
  target(machineId: number): BmcTarget | null {
    const found = this.joined(machineId)[0];
    return found ? toTarget(found.bmc, found.shared) : null;
  }

  /** Every machine whose BMC can be reached (address and credentials), for the poller. */
  targets(): Array<{ machineId: number; name: string; target: IpmiTarget }> {
    return this.joined().flatMap(({ bmc, shared, name }) => {
      const resolved = toTarget(bmc, shared);
      return 'target' in resolved ? [{ machineId: bmc.machineId, name, target: resolved.target }] : [];
    });
  }

  /** Machines' BMC rows with their names and their profiles' credentials (all machines, or one). */
  private joined(machineId?: number): Array<{ bmc: MachineBmcRow; shared: ProfileBmcRow | null; name: string }> {
    const query = this.db
      .select({ bmc: machineBmcsTable, shared: profileBmcsTable, name: machinesTable.name })
      .from(machineBmcsTable)
      .innerJoin(machinesTable, eq(machinesTable.id, machineBmcsTable.machineId))
      .leftJoin(profileBmcsTable, eq(profileBmcsTable.profileId, machinesTable.profileId));
    return (machineId === undefined ? query : query.where(eq(machineBmcsTable.machineId, machineId))).all();
  }

  private profile(name: string): { id: number; name: string } {
    const row = this.db
      .select({ id: profilesTable.id, name: profilesTable.name })
      .from(profilesTable)
      .where(eq(profilesTable.name, name))
      .get();
    if (!row) throw notFound(`no profile named ${name}`, { kind: 'list-profiles' });
    return row;
  }
}

function credential(own: string | null, shared: string | undefined): { value: string | null; source: CredentialSource } {
  if (own !== null) return { value: own, source: 'machine' };
  return shared === undefined ? { value: null, source: 'none' } : { value: shared, source: 'profile' };
}

function toView({ machineId: _id, user, password, ...row }: MachineBmcRow, shared: ProfileBmcRow | null): BmcView {
  const u = credential(user, shared?.user);
  const p = credential(password, shared?.password);
  return {
    ...row,
    user: u.value,
    password: p.value === null || p.value === '' ? 'not set' : 'set',
    sources: { user: u.source, password: p.source },
  };
}

function toProfileView({ profileId: _id, password, ...row }: ProfileBmcRow): ProfileBmcView {
  return { ...row, password: password === '' ? 'not set' : 'set' };
}

function toTarget({ address, port, user, password, cipherSuite }: MachineBmcRow, shared: ProfileBmcRow | null): BmcTarget {
  const u = credential(user, shared?.user).value;
  const p = credential(password, shared?.password).value;
  if (u === null || p === null)
    return { missing: [...(u === null ? ['user' as const] : []), ...(p === null ? ['password' as const] : [])] };
  return { target: { address, port, user: u, password: p, cipherSuite } };
}
