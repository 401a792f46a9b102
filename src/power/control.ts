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
  | { mac: string; action: PowerAction; ok: false; failure: PowerFailure | 'no-bmc' | 'unknown-machine'; reason: string; ms: number };

/** A reimage's steps in order; it stops at the first that fails. */
export interface ReimageResult {
  mac: string;
  ok: boolean;
  steps: Array<{ step: 'export' | 'pxe' | 'status' | 'on' | 'cycle'; ok: boolean; detail: string }>;
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
   * leaves everything as it was), sets the export, asks for a network boot next, then cycles the
   * machine, or powers it on when it is off (a BMC may refuse to cycle a machine that is off).
   */
  async reimage(mac: string, exportName: string, actor: Actor): Promise<ReimageResult> {
    const steps: ReimageResult['steps'] = [];
    const machine = this.machines.find(mac);
    if (!machine) throw notFound(`no machine with MAC ${mac}`, { kind: 'list-machines' });
    if (!this.bmcs.target(machine.id)) throw new TRPCError({ code: 'PRECONDITION_FAILED', message: noBmcText(machine.name, mac) });
    const step = async (action: PowerAction) => {
      const result = await this.one(mac, action, actor);
      steps.push({
        step: action as ReimageResult['steps'][number]['step'],
        ok: result.ok,
        detail: result.ok ? result.answer : result.reason,
      });
      return result;
    };
    const status = await step('status');
    if (!status.ok) return { mac, ok: false, steps };
    try {
      const updated = await this.machines.update({ mac, export: exportName, keepState: false }, actor);
      steps.push({ step: 'export', ok: true, detail: `boots ${updated.export} from its next boot` });
    } catch (err) {
      if (!(err instanceof TRPCError) || err.code === 'INTERNAL_SERVER_ERROR') throw err;
      steps.push({ step: 'export', ok: false, detail: err.message });
      return { mac, ok: false, steps };
    }
    if (!(await step('pxe')).ok) return { mac, ok: false, steps };
    const powered = await step(status.state === 'off' ? 'on' : 'cycle');
    return { mac, ok: powered.ok, steps };
  }

  private async one(mac: string, action: PowerAction, actor: Actor): Promise<PowerResult> {
    const started = Date.now();
    const ms = () => Date.now() - started;
    // Never throws for one machine: a bulk action reports each machine, whatever the others do.
    const machine = this.machines.find(mac);
    if (!machine) return { mac, action, ok: false, failure: 'unknown-machine', reason: `no machine with MAC ${mac}`, ms: ms() };
    const target = this.bmcs.target(machine.id);
    if (!target) return { mac, action, ok: false, failure: 'no-bmc', reason: noBmcText(machine.name, mac), ms: ms() };
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

function noBmcText(name: string, mac: string): string {
  return `${name} (${mac}) has no BMC set: PUT /machines/${mac}/bmc with its address, user and password`;
}

/** What went wrong, what the BMC said, and what the operator does about it. */
export function failureText(name: string, target: Pick<IpmiTarget, 'address' | 'port'>, failure: PowerFailure, answer: string): string {
  const bmc = `the BMC of ${name} (${target.address.includes(':') ? `[${target.address}]` : target.address}:${target.port})`;
  switch (failure) {
    case 'unreachable':
      return `${bmc} did not answer (${answer}): check its address and port, that it is powered and on the network, and that UDP reaches it`;
    case 'credentials':
      return `${bmc} refused the user name or password (${answer}): set the right ones with PUT /machines/{mac}/bmc; nothing was changed`;
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
