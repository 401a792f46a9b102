import { createTRPCClient, createWSClient, httpLink, splitLink, TRPCClientError, wsLink, type TRPCClient } from '@trpc/client';
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';
// In a browser bundle this resolves to ws's stub (its "browser" export), which is never called there.
import NodeWebSocket from 'ws';
import type { AppRouter } from './router/index.js';

export type { AppRouter };
export { TRPCClientError };

/** A typed nbdmux client: every procedure of the router, its inputs and outputs checked at compile time. */
export type NbdmuxClient = TRPCClient<AppRouter>;
export type NbdmuxInputs = inferRouterInputs<AppRouter>;
export type NbdmuxOutputs = inferRouterOutputs<AppRouter>;
export type NbdmuxExport = NbdmuxOutputs['exports']['list'][number];
/** One of an export's versions, as `exports.versions` lists them (newest first). */
export type NbdmuxVersion = NbdmuxOutputs['exports']['versions'][number];
export type NbdmuxConnection = NbdmuxOutputs['connections']['list'][number];
export type NbdmuxEvent = NbdmuxOutputs['events']['list'][number];
/** What `events.stream` sends: an event, or `replay.skipped` when more were missed than it replays. */
export type NbdmuxStreamEvent = NbdmuxOutputs['events']['stream'] extends AsyncIterable<{ data: infer Item }> ? Item : never;
export type NbdmuxHealth = NbdmuxOutputs['system']['health'];
/** A lab machine by its boot NIC's MAC: what it boots, its identity, and where its current boot is. */
export type NbdmuxMachine = NbdmuxOutputs['machines']['list'][number];
/** What a group of machines shares: its own fields (null: unset) and its machines. */
export type NbdmuxProfile = NbdmuxOutputs['profiles']['list'][number];
/** An unknown MAC that asked for a boot script. */
export type NbdmuxDiscoveredMachine = NbdmuxOutputs['machines']['discovered'][number];
/** What `status.stream` sends: a snapshot of health, exports and live connections, on subscribe and on every change. */
export type NbdmuxStatus = NbdmuxOutputs['status']['stream'] extends AsyncIterable<infer Snapshot> ? Snapshot : never;

/** What a refused call throws: `message` is the daemon's, `data.code` its code, `data.issues` the fields at fault. */
export type NbdmuxError = TRPCClientError<AppRouter>;

export function isNbdmuxError(error: unknown): error is NbdmuxError {
  return error instanceof TRPCClientError;
}

export interface NbdmuxClientOptions {
  /** The daemon's HTTP address, e.g. `http://lab-server:4040` (a path prefix is kept; relative URLs resolve against the page in a browser). */
  url: string;
  /**
   * The daemon's admin password (its NBDMUX_ADMIN_PASSWORD), sent as `Authorization: Bearer` on
   * every HTTP request and on the WebSocket upgrade. Browsers cannot set headers on a WebSocket,
   * so there it is not sent at all: the dashboard's session cookie authenticates instead.
   */
  password?: string | undefined;
  /**
   * Called with `true` each time the subscription WebSocket opens, and with `false` each time it
   * closes or fails to open (while a subscription is active, it is then retried): what a page
   * needs for a "live" badge and an outage banner.
   */
  onLinkChange?: ((up: boolean) => void) | undefined;
}

type WebSocketClass = NonNullable<Parameters<typeof createWSClient>[0]['WebSocket']>;

/** Node (and runtimes compatible with it) can use `ws` with headers; browsers and their workers have only the native WebSocket. */
const inNode = typeof (globalThis as { process?: { versions?: { node?: unknown } } }).process?.versions?.node === 'string';

/**
 * Queries and mutations go over HTTP; subscriptions over one WebSocket, opened only while a
 * subscription is active (a script that only queries leaves nothing open, one that subscribed
 * ends a second after its last subscription does) and reconnected on loss, resuming tracked
 * streams such as `events.stream` where they left off.
 */
export function createNbdmuxClient(options: NbdmuxClientOptions): NbdmuxClient {
  const base = daemonBaseUrl(options.url);
  const headers: Record<string, string> = options.password && inNode ? { authorization: `Bearer ${options.password}` } : {};
  const ws = createWSClient({
    url: `${base.replace(/^http/, 'ws')}/trpc`,
    ...(inNode && { WebSocket: nodeWebSocketSending(headers) }),
    // Closed a second after the last subscription ends: tRPC re-arms this idle timer while one is
    // open, and at 0 ms the re-arming spins (3% of a core in an idle `nbdmux watch`, measured).
    lazy: { enabled: true, closeMs: 1_000 },
    keepAlive: { enabled: true, intervalMs: 10_000, pongTimeoutMs: 5_000 },
    // A person watches the dashboard or `nbdmux watch`: back within 2 s of the daemon.
    retryDelayMs: (attempt) => Math.min(250 * 2 ** attempt, 2_000),
    onOpen: () => options.onLinkChange?.(true),
    onClose: () => options.onLinkChange?.(false),
  });
  return createTRPCClient<AppRouter>({
    links: [
      splitLink({
        condition: (op) => op.type === 'subscription',
        true: wsLink({ client: ws }),
        false: httpLink({ url: `${base}/trpc`, headers }),
      }),
    ],
  });
}

/** The daemon's address without a trailing slash; refuses anything that is not http(s) before any request is made. */
function daemonBaseUrl(url: string): string {
  const page = (globalThis as { location?: { href: string } }).location?.href;
  let parsed: URL;
  try {
    parsed = new URL(url, page);
  } catch {
    throw new TypeError(`nbdmux client: ${JSON.stringify(url)} is not a URL; give the daemon's address, e.g. http://localhost:4040`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new TypeError(
      `nbdmux client: ${JSON.stringify(url)} is not an http:// or https:// URL; give the daemon's HTTP address, e.g. http://localhost:4040`,
    );
  }
  return `${parsed.origin}${parsed.pathname.replace(/\/+$/, '')}`;
}

/** Node 20 has no global WebSocket, and no WebSocket API can set headers: `ws` can, given them at construction. */
function nodeWebSocketSending(headers: Record<string, string>): WebSocketClass {
  class WebSocketWithHeaders extends NodeWebSocket {
    constructor(address: string | URL, protocols?: string | string[]) {
      super(address, protocols, { headers });
    }
  }
  return WebSocketWithHeaders as unknown as WebSocketClass;
}
