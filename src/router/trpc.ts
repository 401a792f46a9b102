import { initTRPC } from '@trpc/server';
import { describeError } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import type { ExportRegistry } from '../exports/registry.js';
import type { ConnectionTable, DataPlaneHealth } from '../supervisor/index.js';

/** What every procedure can reach: the domain modules, never HTTP or SQL. */
export interface Context {
  registry: ExportRegistry;
  events: EventLog;
  info: { version: string; authRequired: boolean };
  dataPlane: { health(): Promise<DataPlaneHealth>; connections: Pick<ConnectionTable, 'recent'>; maxConnections: number };
}

const t = initTRPC.context<Context>().create({
  errorFormatter({ shape, error }) {
    const { message, issues } = describeError(error);
    return { ...shape, message, data: { code: shape.data.code, httpStatus: shape.data.httpStatus, path: shape.data.path, issues } };
  },
});

export const router = t.router;
export const publicProcedure = t.procedure;
export const createCallerFactory = t.createCallerFactory;
