import { createTRPCClient, createWSClient, httpLink, wsLink } from '@trpc/client';
import WebSocket from 'ws';
import type { AppRouter } from '../../src/router/index.js';

/** The typed client another TypeScript tool would use: its types come from the router alone. */
export function trpcClient(url: string) {
  return createTRPCClient<AppRouter>({ links: [httpLink({ url: `${url}/trpc` })] });
}

/** The same client over WebSocket, for subscriptions. Node 20 has no global WebSocket: `ws` stands in. */
export function trpcWsClient(url: string) {
  const ws = createWSClient({ url: `${url.replace(/^http/, 'ws')}/trpc`, WebSocket: WebSocket as never, retryDelayMs: () => 200 });
  return { client: createTRPCClient<AppRouter>({ links: [wsLink({ client: ws })] }), close: () => ws.close() };
}
