import { on } from 'node:events';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { tracked } from '@trpc/server';
import { z } from 'zod';
import type { EventRow } from '../db/schema.js';
import { authedProcedure, router } from './trpc.js';

export const eventsListInput = z.strictObject({
  afterId: z.number({ error: 'must be a number' }).int().min(0).optional(),
  limit: z.number({ error: 'must be a number' }).int().min(1).max(1000, 'must be at most 1000').default(100),
});

export const eventsStreamInput = z.strictObject({
  /** The id of the last event received: the stream first replays everything after it. */
  lastEventId: z.string().regex(/^\d+$/, 'must be an event id').nullish(),
});

/**
 * A subscriber further behind than this is told to list the events instead of receiving them.
 * tRPC's WebSocket adapter sends without waiting for the socket to drain, so a replay sits in
 * memory until it is out: 20 subscribers replaying 2,000 each cost about 40 MiB (10,000: 85).
 */
export const replayCap = 2_000;
const replayPageSize = 100;

/**
 * The `skipped` events after `afterId`, up to this `id`, are not replayed. `too-far-behind`: sent
 * instead of a replay longer than `replayCap`, they are in `events.list`; live events follow.
 * `pruned`: they were older than --retain-days and are gone; the replay of those kept follows.
 * Shaped like an event, so a client that only prints events still shows it.
 */
export interface ReplaySkipped {
  id: number;
  at: string;
  type: 'replay.skipped';
  exportName: null;
  details: { skipped: number; afterId: number; reason: 'too-far-behind' | 'pruned' };
}

export type EventStreamItem = EventRow | ReplaySkipped;

export const eventsRouter = router({
  /** What happened, newest first: exports created and removed, connections, nbd-server failures. */
  list: authedProcedure.input(eventsListInput.prefault({})).query(({ ctx, input }) => ctx.events.recent(input.limit, input.afterId)),

  /**
   * Every event as it happens, each tracked by its id so a reconnecting client resumes where it
   * left off. Listening starts before the replay, so no event falls between the two, and ids
   * already sent are skipped, so none comes twice. The replay goes a page at a time, giving
   * other requests their turn in between; one longer than `replayCap` is a `replay.skipped`,
   * and so is a hole that retention pruned (before the replay of what is kept).
   */
  stream: authedProcedure.input(eventsStreamInput.prefault({})).subscription(async function* ({ ctx, input, signal }) {
    const live = on(ctx.events, 'event', { signal });
    ctx.events.subscribers++;
    try {
      let lastId = input.lastEventId ? Number(input.lastEventId) : 0;
      if (input.lastEventId) {
        const missed = ctx.events.countSince(lastId);
        // Ids are consecutive and only retention deletes, oldest first: a hole after lastId was pruned.
        if (missed.oldestId !== null && missed.oldestId > lastId + 1) {
          const pruned = skippedItem(missed.oldestId - 1, missed.oldestId - 1 - lastId, lastId, 'pruned');
          lastId = pruned.id;
          yield tracked<EventStreamItem>(String(pruned.id), pruned);
        }
        if (missed.count > replayCap) {
          const skipped = skippedItem(missed.newestId!, missed.count, lastId, 'too-far-behind');
          lastId = skipped.id;
          yield tracked<EventStreamItem>(String(skipped.id), skipped);
        } else {
          for (;;) {
            const page = ctx.events.since(lastId, replayPageSize);
            for (const event of page) {
              lastId = event.id;
              yield tracked<EventStreamItem>(String(event.id), event);
            }
            if (page.length < replayPageSize) break;
            await nextTurn();
          }
        }
      }
      try {
        for await (const [event] of live as AsyncIterable<[EventRow]>) {
          if (event.id <= lastId) continue;
          lastId = event.id;
          yield tracked<EventStreamItem>(String(event.id), event);
        }
      } catch (err) {
        if (!signal?.aborted) throw err;
      }
    } finally {
      ctx.events.subscribers--;
    }
  }),
});

function skippedItem(id: number, skipped: number, afterId: number, reason: ReplaySkipped['details']['reason']): ReplaySkipped {
  return { id, at: new Date().toISOString(), type: 'replay.skipped', exportName: null, details: { skipped, afterId, reason } };
}
