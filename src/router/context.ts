import type http from 'node:http';
import type { TRPCError } from '@trpc/server';
import type { Caller } from '../auth/caller.js';
import { errorText, type Logger } from '../log.js';
import { bootEndpointOf } from '../http/boot-endpoint.js';
import { appRouter } from './index.js';
import type { Context, Services } from './trpc.js';

export type CreateContext = (options: { req: http.IncomingMessage }) => Context;

/**
 * One context per request, for the HTTP and WebSocket adapters and the REST routes alike: the
 * domain modules and the request's caller, whom the procedures check (authedProcedure).
 */
export function contextFactory(services: Services, callerOf: (req: http.IncomingMessage) => Caller): CreateContext {
  return ({ req }) => ({ ...services, caller: callerOf(req), endpoint: () => bootEndpointOf(req, services.nbdPublicPort) });
}

/** What both tRPC adapters are given: the router, the context, and a log of procedures that failed on our side. */
export function adapterOptions(createContext: CreateContext, log: Logger) {
  return {
    router: appRouter,
    createContext,
    onError: ({ error, path }: { error: TRPCError; path: string | undefined }) => {
      const cause = error.cause ?? error;
      if (error.code === 'INTERNAL_SERVER_ERROR') log.error('procedure failed', { path, error: errorText(cause) });
    },
  };
}
