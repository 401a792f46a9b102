import net from 'node:net';

/** Holds a free loopback port, so that whatever is under test finds it taken, until released. */
export async function occupyPort(): Promise<{ port: number; release(): Promise<void> }> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    release: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A loopback port nothing listens on (just now): for a server to take, or for a client to find closed. */
export async function freePort(): Promise<number> {
  const held = await occupyPort();
  await held.release();
  return held.port;
}
