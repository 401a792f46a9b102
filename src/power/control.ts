import { TRPCError } from '@trpc/server';
import { ChildQueue } from '../bounded-child.js';
import { notFound } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import type { MachineRegistry } from '../machines/registry.js';
import type { Actor, PowerAction, PowerFailure, PowerState } from '../model/event-map.js';
import type { BmcSettings } from './bmcs.js';
import { defaultIpmiBounds, runIpmitool, type IpmiBounds, type IpmiTarget } from './ipmitool.js';

/** One machine's answer to one action; `reason` says what to do about a failure. */
export type PowerResult =
  | { mac: string; action: PowerAction; ok: true; state: PowerState | null; answer: string; ms: number }
  | { mac: string; action: PowerAction; ok: false; failure: PowerFailure | SetupFailure; reason: string; ms: number };

/** What nbdmux lacks to ask a machine's BMC anything: the machine, its BMC's address, or the user or password to log in with. */
export type SetupFailure = 'unknown-machine' | 'no-bmc' | 'no-credentials';

type ReimageStep = 'export' | 'pxe' | 'status' | 'on' | 'cycle';

/** A reimage's steps in order; it stops at the first that fails (`failure`: why its BMC did not do it). */
export interface ReimageResult {
  mac: string;
  ok: boolean;
  failure?: PowerFailure | SetupFailure;
  steps: Array<{ step: ReimageStep; ok: boolean; detail: string }>;
}

export interface PowerOptions {
  /** ipmitool children at once, for a bulk action and the poller alike. */
  parallel: number;
  bounds: IpmiBounds;
}

export const defaultPowerOptions: PowerOptions = { parallel: 16, bounds: defaultIpmiBounds };

/**
 * Power actions over IPMI: each one runs ipmitool through one queue (so 100 machines cost
 * `parallel` children, never 100) and is an event naming who asked.
 */
export class PowerControl {
  readonly queue: ChildQueue;

  constructor(
    private readonly bmcs: BmcSettings,
    private readonly machines: Pick<MachineRegistry, 'update' | 'find'>,
    private readonly events: EventLog,
    readonly options: PowerOptions = defaultPowerOptions,
  ) {
    this.queue = new ChildQueue(options.parallel);
  }

  /** One action on one machine; a BMC that did not do it is a refusal saying what it answered. */
  async act(mac: string, action: PowerAction, actor: Actor): Promise<PowerResult & { ok: true }> {
    const result = await this.one(mac, action, actor);
    if (!result.ok) throw refusalOf(result);
    return result;
  }

  /** One action on many machines, `parallel` at once: one result per MAC, in the order given, whatever each BMC does. */
  powerMany(macs: readonly string[], action: PowerAction, actor: Actor): Promise<PowerResult[]> {
    return Promise.all(macs.map((mac) => this.one(mac, action, actor)));
  }

  /**
   * Asks the BMC for the power state first (a BMC that is silent or refuses the credentials then
   * leaves everything as it was), sets the export, then boots the machine from the network.
   */
  async reimage(mac: string, exportName: string, actor: Actor): Promise<ReimageResult> {
    const machine = this.machines.find(mac);
    if (!machine) throw notFound(`no machine with MAC ${mac}`, { kind: 'list-machines' });
    const target = this.bmcs.target(machine.id);
    if (!target || 'missing' in target)
      throw new TRPCError({ code: 'PRECONDITION_FAILED', message: setupText(machine.name, mac, target && target.missing) });
    const steps: ReimageResult['steps'] = [];
    const status = await this.step(mac, 'status', actor, steps);
    if (!status.ok) return { mac, ok: false, failure: status.failure, steps };
    try {
      const updated = await this.machines.update({ mac, export: exportName, keepState: false }, actor);
      steps.push({ step: 'export', ok: true, detail: `boots ${updated.export} from its next boot` });
    } catch (err) {
      if (!(err instanceof TRPCError) || err.code === 'INTERNAL_SERVER_ERROR') throw err;
      steps.push({ step: 'export', ok: false, detail: err.message });
      return { mac, ok: false, steps };
    }
    return this.bootFromNetwork(mac, status.state, actor, steps);
  }

  /**
   * Boots a machine whose export is set into it now: its power state (unless known), a network
   * boot next, then a cycle, or power on when it is off (a BMC may refuse to cycle a machine that
   * is off). Stops at the first step that fails; never throws, so a profile's reimage reports each machine.
   */
  async bootFromNetwork(mac: string, state: PowerState | null, actor: Actor, steps: ReimageResult['steps'] = []): Promise<ReimageResult> {
    let known = state;
    if (known === null) {
      const status = await this.step(mac, 'status', actor, steps);
      if (!status.ok) return { mac, ok: false, failure: status.failure, steps };
      known = status.state;
    }
    const pxe = await this.step(mac, 'pxe', actor, steps);
    if (!pxe.ok) return { mac, ok: false, failure: pxe.failure, steps };
    const powered = await this.step(mac, known === 'off' ? 'on' : 'cycle', actor, steps);
    return powered.ok ? { mac, ok: true, steps } : { mac, ok: false, failure: powered.failure, steps };
  }

  private async step(mac: string, action: PowerAction, actor: Actor, steps: ReimageResult['steps']): Promise<PowerResult> {
    const result = await this.one(mac, action, actor);
    steps.push({ step: action as ReimageStep, ok: result.ok, detail: result.ok ? result.answer : result.reason });
    return result;
  }

  private async one(mac: string, action: PowerAction, actor: Actor): Promise<PowerResult> {
    const started = Date.now();
    const ms = () => Date.now() - started;
    // Never throws for one machine: a bulk action reports each machine, whatever the others do.
    const machine = this.machines.find(mac);
    if (!machine) return { mac, action, ok: false, failure: 'unknown-machine', reason: `no machine with MAC ${mac}`, ms: ms() };
    const resolved = this.bmcs.target(machine.id);
    if (!resolved) return { mac, action, ok: false, failure: 'no-bmc', reason: setupText(machine.name, mac, null), ms: ms() };
    if ('missing' in resolved)
      return { mac, action, ok: false, failure: 'no-credentials', reason: setupText(machine.name, mac, resolved.missing), ms: ms() };
    const { target } = resolved;
    const answer = await this.queue.run(() => runIpmitool(target, action, this.options.bounds));
    this.events.record('machine.power', null, {
      mac,
      name: machine.name,
      action,
      outcome: answer.ok ? 'done' : answer.failure,
      ...(answer.ok && answer.state !== null && { state: answer.state }),
      ...(!answer.ok && { error: answer.answer }),
      ...actor,
    });
    if (answer.ok) return { mac, action, ok: true, state: answer.state, answer: answer.answer, ms: ms() };
    return {
      mac,
      action,
      ok: false,
      failure: answer.failure,
      reason: failureText(machine.name, target, answer.failure, answer.answer),
      ms: ms(),
    };
  }
}

/** What a machine lacks before its BMC can be asked (`missing` null: the BMC itself), and where to set it. */
export function setupText(name: string, mac: string, missing: ReadonlyArray<'user' | 'password'> | null): string {
  // In words every interface can show: each names the setting its own way (REST path, CLI command, dashboard form).
  if (missing === null)
    return `${name} (${mac}) has no BMC set: give it its BMC's address, and a user and password (its own or its profile's)`;
  return `${name} (${mac}) has a BMC address but no ${missing.join(' or ')}: set it on the machine's BMC or on its profile's`;
}

/** What went wrong, what the BMC said, and what the operator does about it. */
export function failureText(name: string, target: Pick<IpmiTarget, 'address' | 'port'>, failure: PowerFailure, answer: string): string {
  const bmc = `the BMC of ${name} (${target.address.includes(':') ? `[${target.address}]` : target.address}:${target.port})`;
  switch (failure) {
    case 'unreachable':
      return `${bmc} did not answer (${answer}): check its address and port, that it is powered and on the network, and that UDP reaches it`;
    case 'credentials':
      return `${bmc} refused the user name or password (${answer}): set the right ones on the machine's BMC or its profile's; nothing was changed`;
    case 'refused':
      return `${bmc} refused the command (${answer}): it may not support it, or not in the machine's present power state`;
    case 'no-ipmitool':
      return `${answer}: install the ipmitool package on the daemon's host`;
  }
}

function refusalOf(result: PowerResult & { ok: false }): TRPCError {
  switch (result.failure) {
    case 'unknown-machine':
      return notFound(result.reason, { kind: 'list-machines' });
    case 'no-bmc':
    case 'no-credentials':
      return new TRPCError({ code: 'PRECONDITION_FAILED', message: result.reason });
    case 'unreachable':
      return new TRPCError({ code: 'GATEWAY_TIMEOUT', message: result.reason });
    case 'no-ipmitool':
      return new TRPCError({ code: 'SERVICE_UNAVAILABLE', message: result.reason });
    case 'credentials':
    case 'refused':
      return new TRPCError({ code: 'BAD_GATEWAY', message: result.reason });
  }
}
