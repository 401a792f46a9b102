import { once, type EventEmitter } from 'node:events';
import type { ExportRegistry } from '../exports/registry.js';
import type { MachineRegistry } from '../machines/registry.js';
import type { ProfileRegistry } from '../profiles/registry.js';
import type { Power } from '../power/index.js';
import { withoutCloudInit } from '../profiles/fields.js';
import type { ConnectionTable, DataPlaneHealth } from '../supervisor/index.js';

/** What a status snapshot is read from: the domain modules, never a request's context. */
export interface StatusSources {
  dataPlane: { health(): Promise<DataPlaneHealth>; connections: Pick<ConnectionTable, 'recent'>; maxConnections: number };
  registry: Pick<ExportRegistry, 'list'>;
  machines: Pick<MachineRegistry, 'list' | 'discovered'>;
  profiles: Pick<ProfileRegistry, 'list'>;
  power: Pick<Power, 'withPower' | 'withProfileBmc'>;
  /** Emits 'event' for every event recorded: something may have changed. */
  events: EventEmitter;
}

/** Everything the dashboard shows about the data plane and the machines, in one consistent picture. */
export async function statusSnapshot(sources: StatusSources) {
  return {
    health: await sources.dataPlane.health(),
    exports: sources.registry.list(),
    connections: sources.dataPlane.connections.recent(sources.dataPlane.maxConnections, true),
    // A list, so without cloud-init documents, which may hold secrets.
    machines: sources.power.withPower(sources.machines.list()).map(withoutCloudInit),
    discoveredMachines: sources.machines.discovered(),
    profiles: sources.power.withProfileBmc(sources.profiles.list()),
  };
}

export type StatusSnapshot = Awaited<ReturnType<typeof statusSnapshot>>;

/** Byte counters move without events, so live connections are re-read at least this often. */
const refreshMs = 1000;
/** Lets a burst of events (a boot storm) become one snapshot instead of hundreds. */
const settleMs = 50;

/**
 * Yields a snapshot at once, then a new one whenever something changed: after any event, and
 * every second while byte counters may move. Ends when `signal` aborts, leaving no listener.
 */
export async function* statusChanges(sources: StatusSources, signal: AbortSignal): AsyncGenerator<StatusSnapshot> {
  let last = '';
  while (!signal.aborted) {
    const snapshot = await statusSnapshot(sources);
    const text = JSON.stringify(snapshot);
    if (text !== last) {
      last = text;
      yield snapshot;
    }
    await nextChange(sources, signal);
  }
}

async function nextChange(sources: StatusSources, signal: AbortSignal): Promise<void> {
  const wait = AbortSignal.any([signal, AbortSignal.timeout(refreshMs)]);
  try {
    await once(sources.events, 'event', { signal: wait });
    await new Promise<void>((resolve) => setTimeout(resolve, settleMs));
  } catch {
    // The refresh interval passed, or the subscriber left: either way, look again (or stop).
  }
}
