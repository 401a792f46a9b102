import type { Db } from '../db/open.js';
import type { EventLog } from '../events/event-log.js';
import type { MachineRegistry, MachineView } from '../machines/registry.js';
import type { ProfileView } from '../profiles/registry.js';
import { BmcSettings, type BmcView, type ProfileBmcView } from './bmcs.js';
import { defaultPowerOptions, PowerControl, type PowerOptions } from './control.js';
import { PowerPoller, type PolledPower } from './poller.js';

/** A machine as the control plane shows it, with its BMC (password as "set"/"not set") and its polled power state. */
export type MachineWithPower = MachineView & { bmc: BmcView | null; power: PolledPower | null };

/** The power parts, wired: what the router and the daemon hold. */
export interface Power {
  bmcs: BmcSettings;
  control: PowerControl;
  poller: PowerPoller;
  /** Adds each machine's BMC and cached power state: reads the database and the cache, never a BMC. */
  withPower(views: MachineView[]): MachineWithPower[];
  /** Adds each profile's shared BMC credentials (to a full view, or to a list's, which has no cloud-init documents). */
  withProfileBmc<View extends Pick<ProfileView, 'name'>>(views: View[]): (View & { bmc: ProfileBmcView | null })[];
}

export function createPower(
  db: Db,
  events: EventLog,
  machines: MachineRegistry,
  options: PowerOptions & { pollIntervalMs: number } = { ...defaultPowerOptions, pollIntervalMs: 60_000 },
): Power {
  const bmcs = new BmcSettings(db, events, machines);
  const control = new PowerControl(bmcs, machines, events, options);
  const poller = new PowerPoller(bmcs, control, options.pollIntervalMs);
  return {
    bmcs,
    control,
    poller,
    withPower(views) {
      const all = bmcs.views();
      return views.map((view) => {
        const id = machines.find(view.mac)?.id;
        return { ...view, bmc: (id !== undefined && all.get(id)) || null, power: (id !== undefined && poller.get(id)) || null };
      });
    },
    withProfileBmc(views) {
      const all = bmcs.profileViews();
      return views.map((view) => ({ ...view, bmc: all.get(view.name) ?? null }));
    },
  };
}
