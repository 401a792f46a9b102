import net from 'node:net';

export interface Relay {
  /** Where clients connect; the daemon sees them coming from the relay's source address. */
  port: number;
  close(): Promise<void>;
}

/**
 * A TCP relay on 127.0.0.1 that connects onward from `sourceAddress` (127.0.0.2, ...): lets
 * nbdinfo and nbdcopy, which cannot choose their source address, reach the daemon as a second client.
 */
export async function startRelay(targetPort: number, sourceAddress: string): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort, localAddress: sourceAddress });
    track(client);
    track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
