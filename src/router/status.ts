import { statusChanges } from '../status/snapshot.js';
import { authedProcedure, router } from './trpc.js';

export const statusRouter = router({
  /** The data plane as a snapshot on subscribe, then again on every change: health, exports, live connections, machines. */
  stream: authedProcedure.subscription(async function* ({ ctx, signal }) {
    yield* statusChanges(ctx, signal!);
  }),
});
