import { spawn } from 'node:child_process';
import net from 'node:net';
import { exitedBeforeServing } from './close-classification.js';

const greeting = Buffer.from('NBDMAGIC');

/**
 * Proves nbd-server can serve right now: starts one, exactly as for a client, on a private
 * loopback connection, and waits for its NBD greeting. Costs one nbd-server start, so it runs
 * only to confirm recovery after failures.
 */
export function nbdServerGreets(bin: string, configPath: string, env: NodeJS.ProcessEnv, timeoutMs = 10_000): Promise<void> {
  const listener = net.createServer({ pauseOnConnect: true });
  let client: net.Socket | undefined;
  const finished = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nbd-server did not greet within ${timeoutMs / 1000} s`)), timeoutMs);
    const settle = (error?: Error) => {
      clearTimeout(timer);
      if (error) reject(error);
      else resolve();
    };
    listener.on('connection', (socket) => {
      const failed = (err: Error) => settle(new Error(`cannot run ${bin}: ${err.message}`));
      let child;
      try {
        child = spawn(bin, ['-d', '-C', configPath], { stdio: [socket, socket, 'pipe'], env });
      } catch (err) {
        failed(err as Error); // ENOMEM and the like: a failed check, never a crash
        return;
      } finally {
        socket.destroy();
      }
      let stderr = '';
      // Absent when Node could not even make the pipes (EMFILE): 'error' says so.
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      child.on('error', failed);
      child.on('close', (code, signal) => settle(new Error(exitedBeforeServing(code, signal, stderr))));
    });
    listener.listen(0, '127.0.0.1', () => {
      const { port } = listener.address() as net.AddressInfo;
      let received = Buffer.alloc(0);
      client = net.connect(port, '127.0.0.1');
      client.on('error', () => {});
      client.on('data', (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        if (received.length >= greeting.length) {
          settle(received.subarray(0, greeting.length).equals(greeting) ? undefined : new Error('nbd-server sent no NBD greeting'));
        }
      });
    });
  });
  return finished.finally(() => {
    client?.destroy();
    listener.close();
  });
}
