import { initTRPC } from '@trpc/server';
import { isOutOfSpace, type DataDirSpace } from '../db/data-dir-space.js';
import { dataDirFull, describeError } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import type { ExportRegistry } from '../exports/registry.js';
import type { ConnectionTable, DataPlaneHealth } from '../supervisor/index.js';

/** What every procedure can reach: the domain modules, never HTTP or SQL. */
export interface Context {
  registry: ExportRegistry;
  events: EventLog;
  space: Pick<DataDirSpace, 'dataDir' | 'reportFull'>;
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
/** A change the full data dir cannot hold is the operator's to fix: 503 saying so, not an internal error. */
const outOfSpaceIsUnavailable = t.middleware(async ({ ctx, next }) => {
  const result = await next();
  if (!result.ok && isOutOfSpace(result.error.cause)) {
    ctx.space.reportFull(result.error.cause);
    throw dataDirFull(ctx.space.dataDir);
  }
  return result;
});

export const publicProcedure = t.procedure.use(outOfSpaceIsUnavailable);
export const createCallerFactory = t.createCallerFactory;
