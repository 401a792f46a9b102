import { authedProcedure, router } from './trpc.js';

export const systemRouter = router({
  /** Whether new NBD clients can be served right now, and if not, why. */
  health: authedProcedure.query(({ ctx }) => ctx.dataPlane.health()),

  /**
   * What the dashboard needs to know about this daemon, with `boot`: the address its boot scripts
   * would give this caller, which the page's attach and boot lines use (the initramfs resolves no names).
   */
  info: authedProcedure.query(({ ctx }) => ({ ...ctx.info, boot: ctx.endpoint() })),

  /** The daemon's own footprint: memory, uptime, and how many live event listeners subscriptions hold. */
  stats: authedProcedure.query(({ ctx }) => ({
    rssBytes: process.memoryUsage().rss,
    uptimeSeconds: Math.round(process.uptime()),
    eventListeners: ctx.events.listenerCount('event'),
  })),
});
