import type { Actor, PowerAction } from '../model/event-map.js';
import type { ProfileRegistry } from '../profiles/registry.js';
import type { PowerControl, PowerResult, ReimageResult } from './control.js';

/** A profile's action: one result per machine of it, by name, whatever each BMC did. */
export interface ProfilePowerResult {
  profile: string;
  results: Array<PowerResult & { name: string }>;
}

export interface ProfileReimageResult {
  profile: string;
  export: string;
  results: Array<ReimageResult & { name: string }>;
}

type Parts = { control: PowerControl; profiles: Pick<ProfileRegistry, 'get' | 'update'> };

/** One action on every machine of a profile, through the power queue (bounded parallelism). */
export async function powerProfile(
  { control, profiles }: Parts,
  name: string,
  action: PowerAction,
  actor: Actor,
): Promise<ProfilePowerResult> {
  const { machines } = profiles.get(name);
  const results = await control.powerMany(
    machines.map((m) => m.mac),
    action,
    actor,
  );
  return { profile: name, results: results.map((result, i) => ({ ...result, name: machines[i]!.name })) };
}

/**
 * Sets the profile's export for all its machines (their own export cleared, as `allMachines`
 * does), then boots each from the network now. The export is set first and for every machine: a
 * machine whose BMC is missing or fails boots it at its next boot, and its result says why it was
 * not rebooted now.
 */
export async function reimageProfile(
  { control, profiles }: Parts,
  name: string,
  exportName: string,
  actor: Actor,
): Promise<ProfileReimageResult> {
  const { machines } = await profiles.update({ name, export: exportName, allMachines: true, keepState: false }, actor);
  const exportStep = { step: 'export' as const, ok: true, detail: `boots ${exportName} from its next boot (the profile's export)` };
  const results = await Promise.all(
    machines.map(async ({ mac, name: machineName }) => {
      const result = await control.bootFromNetwork(mac, null, actor, [exportStep]);
      return { ...result, name: machineName };
    }),
  );
  return { profile: name, export: exportName, results };
}
