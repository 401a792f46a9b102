import { createTRPCClient, httpLink } from '@trpc/client';
import type { AppRouter } from '../../src/router/index.js';

/** The typed client another TypeScript tool would use: its types come from the router alone. */
export function trpcClient(url: string) {
  return createTRPCClient<AppRouter>({ links: [httpLink({ url: `${url}/trpc` })] });
}
