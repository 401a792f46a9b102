import { connectionsRouter } from './connections.js';
import { eventsRouter } from './events.js';
import { exportsRouter } from './exports.js';
import { machinesRouter } from './machines.js';
import { profilesRouter } from './profiles.js';
import { statusRouter } from './status.js';
import { systemRouter } from './system.js';
import { createCallerFactory, router } from './trpc.js';

export const appRouter = router({
  exports: exportsRouter,
  machines: machinesRouter,
  profiles: profilesRouter,
  connections: connectionsRouter,
  events: eventsRouter,
  status: statusRouter,
  system: systemRouter,
});

export type AppRouter = typeof appRouter;
export type { Context } from './trpc.js';
export const createCaller = createCallerFactory(appRouter);
