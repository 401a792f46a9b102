import { createTRPCClient, createWSClient, httpLink, splitLink, TRPCClientError, wsLink } from '@trpc/client';
import type { inferRouterOutputs } from '@trpc/server';
import type { AppRouter } from '../../src/router/index.js';

type Outputs = inferRouterOutputs<AppRouter>;
export type ExportView = Outputs['exports']['list'][number];
export type ConnectionView = Outputs['connections']['list'][number];
export type EventRow = Outputs['events']['list'][number];
export type { StatusSnapshot } from '../../src/status/snapshot.js';

/**
 * The typed client, as any TypeScript tool would use it: queries and mutations over HTTP,
 * subscriptions over one WebSocket that reconnects by itself and resumes tracked streams.
 */
export function connect(onLinkChange: (up: boolean) => void) {
  const ws = createWSClient({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/trpc`,
    retryDelayMs: (attempt) => Math.min(250 * 2 ** attempt, 2000),
    onOpen: () => onLinkChange(true),
    onClose: () => onLinkChange(false),
  });
  return createTRPCClient<AppRouter>({
    links: [splitLink({ condition: (op) => op.type === 'subscription', true: wsLink({ client: ws }), false: httpLink({ url: '/trpc' }) })],
  });
}

export type Api = ReturnType<typeof connect>;

/** The field messages of a refused request, or a single general message. */
export function errorMessages(error: unknown): { fields: Map<string, string>; general: string } {
  const fields = new Map<string, string>();
  if (error instanceof TRPCClientError) {
    const issues = (error.data as { issues?: Array<{ field: string; message: string }> } | undefined)?.issues ?? [];
    for (const issue of issues) if (!fields.has(issue.field)) fields.set(issue.field, issue.message);
    return { fields, general: issues.length > 0 ? '' : error.message };
  }
  return { fields, general: error instanceof Error ? error.message : String(error) };
}
