import { once } from 'node:events';
import type { Context } from '../router/trpc.js';

/** Everything the dashboard shows about the data plane, in one consistent picture. */
export async function statusSnapshot(ctx: Context) {
  return {
    health: await ctx.dataPlane.health(),
    exports: ctx.registry.list(),
    connections: ctx.dataPlane.connections.recent(ctx.dataPlane.maxConnections, true),
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
export async function* statusChanges(ctx: Context, signal: AbortSignal): AsyncGenerator<StatusSnapshot> {
  let last = '';
  while (!signal.aborted) {
    const snapshot = await statusSnapshot(ctx);
    const text = JSON.stringify(snapshot);
    if (text !== last) {
      last = text;
      yield snapshot;
    }
    await nextChange(ctx, signal);
  }
}

async function nextChange(ctx: Context, signal: AbortSignal): Promise<void> {
  const wait = AbortSignal.any([signal, AbortSignal.timeout(refreshMs)]);
  try {
    await once(ctx.events, 'event', { signal: wait });
    await new Promise<void>((resolve) => setTimeout(resolve, settleMs));
  } catch {
    // The refresh interval passed, or the subscriber left: either way, look again (or stop).
  }
}
