import { on } from 'node:events';
import { tracked } from '@trpc/server';
import { z } from 'zod';
import type { EventRow } from '../db/schema.js';
import { publicProcedure, router } from './trpc.js';

export const eventsListInput = z.strictObject({
  afterId: z.number({ error: 'must be a number' }).int().min(0).optional(),
  limit: z.number({ error: 'must be a number' }).int().min(1).max(1000, 'must be at most 1000').default(100),
});

export const eventsStreamInput = z.strictObject({
  /** The id of the last event received: the stream first replays everything after it. */
  lastEventId: z.string().regex(/^\d+$/, 'must be an event id').nullish(),
});

export const eventsRouter = router({
  /** What happened, newest first: exports created and removed, connections, nbd-server failures. */
  list: publicProcedure.input(eventsListInput.prefault({})).query(({ ctx, input }) => ctx.events.recent(input.limit, input.afterId)),

  /**
   * Every event as it happens, each tracked by its id so a reconnecting client resumes where it
   * left off. Listening starts before the replay, so no event falls between the two, and ids
   * already sent are skipped, so none comes twice.
   */
  stream: publicProcedure.input(eventsStreamInput.prefault({})).subscription(async function* ({ ctx, input, signal }) {
    const live = on(ctx.events, 'event', { signal });
    let lastId = input.lastEventId ? Number(input.lastEventId) : 0;
    if (input.lastEventId) {
      for (const event of ctx.events.since(lastId)) {
        lastId = event.id;
        yield tracked(String(event.id), event);
      }
    }
    try {
      for await (const [event] of live as AsyncIterable<[EventRow]>) {
        if (event.id <= lastId) continue;
        lastId = event.id;
        yield tracked(String(event.id), event);
      }
    } catch (err) {
      if (!signal?.aborted) throw err;
    }
  }),
});
