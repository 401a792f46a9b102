import { initTRPC, TRPCError } from '@trpc/server';
import { actorOf, refusalCode, type Caller } from '../auth/caller.js';
import { isOutOfSpace, type DataDirSpace } from '../db/data-dir-space.js';
import { dataDirFull, describeError } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import type { ExportRegistry } from '../exports/registry.js';
import type { MachineRegistry } from '../machines/registry.js';
import type { ProfileRegistry } from '../profiles/registry.js';
import type { ConnectionTable, DataPlaneHealth } from '../supervisor/index.js';
import type { BootEndpoint } from '../boot/ipxe.js';
import type { Power } from '../power/index.js';

/** The domain modules, the same for every request. */
export interface Services {
  registry: ExportRegistry;
  machines: MachineRegistry;
  profiles: ProfileRegistry;
  power: Power;
  events: EventLog;
  space: Pick<DataDirSpace, 'dataDir' | 'reportFull'>;
  info: { version: string; authRequired: boolean };
  /** The NBD port machines dial (`--nbd-public-port`, else the port nbdmux listens on). */
  nbdPublicPort: number;
  dataPlane: { health(): Promise<DataPlaneHealth>; connections: Pick<ConnectionTable, 'recent'>; maxConnections: number };
}

/** What every procedure can reach: the domain modules and who is calling, never HTTP or SQL. */
export interface Context extends Services {
  caller: Caller;
  /** Where this caller reaches the daemon, as a boot script written for it would say. */
  endpoint(): BootEndpoint;
}

const t = initTRPC.context<Context>().create({
  errorFormatter({ shape, error }) {
    const { message, issues, problem, remedy } = describeError(error);
    return {
      ...shape,
      message,
      data: { code: shape.data.code, httpStatus: shape.data.httpStatus, path: shape.data.path, issues, problem, remedy },
    };
  },
});

export const router = t.router;

/** Runs before the input is read: a refused caller costs no parsing. Procedures then know who acts, for their events. */
const authenticated = t.middleware(({ ctx, next }) => {
  const { caller } = ctx;
  if (!caller.ok) throw new TRPCError({ code: refusalCode(caller), message: caller.message });
  return next({ ctx: { caller, actor: actorOf(caller) } });
});

/** A change the full data dir cannot hold is the operator's to fix: 503 saying so, not an internal error. */
const outOfSpaceIsUnavailable = t.middleware(async ({ ctx, next }) => {
  const result = await next();
  if (!result.ok && isOutOfSpace(result.error.cause)) {
    ctx.space.reportFull(result.error.cause);
    throw dataDirFull(ctx.space.dataDir);
  }
  return result;
});

/** Every procedure: the control plane has nothing for a caller the AuthGate refused. */
export const authedProcedure = t.procedure.use(authenticated).use(outOfSpaceIsUnavailable);
export const createCallerFactory = t.createCallerFactory;
