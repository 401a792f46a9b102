import { z } from 'zod';
import { authedProcedure, router } from './trpc.js';

export const connectionsListInput = z.strictObject({
  live: z.boolean({ error: 'must be true or false' }).default(false),
  limit: z.number({ error: 'must be a number' }).int().min(1).max(1000, 'must be at most 1000').default(100),
});

export const connectionsRouter = router({
  /** NBD connections, newest first: which export each chose, its client, pid, bytes sent and how it ended. */
  list: authedProcedure
    .input(connectionsListInput.prefault({}))
    .query(({ ctx, input }) => ctx.dataPlane.connections.recent(input.limit, input.live)),
});
