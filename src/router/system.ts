import { publicProcedure, router } from './trpc.js';

export const systemRouter = router({
  /** Whether new NBD clients can be served right now, and if not, why. */
  health: publicProcedure.query(({ ctx }) => ctx.dataPlane.health()),
});
