import { z } from 'zod';
import { publicProcedure, router } from './trpc.js';

export const eventsListInput = z.strictObject({
  afterId: z.number({ error: 'must be a number' }).int().min(0).optional(),
  limit: z.number({ error: 'must be a number' }).int().min(1).max(1000, 'must be at most 1000').default(100),
});

export const eventsRouter = router({
  /** What happened, newest first: exports created and removed, connections, nbd-server failures. */
  list: publicProcedure.input(eventsListInput.prefault({})).query(({ ctx, input }) => ctx.events.recent(input.limit, input.afterId)),
});
