import { createNbdmuxClient } from '../../src/client.js';

/** The client other TypeScript tools use (HTTP, and WebSocket for subscriptions), pointed at a test daemon. */
export const trpcClient = (url: string) => createNbdmuxClient({ url });
