import http from 'node:http';
import net from 'node:net';

export interface RawReply {
  /** The status of the first response, or null if the connection closed (or waitMs passed) with none. */
  status: number | null;
  /** Everything received up to the end of the first response head. */
  text: string;
  /** True when the daemon closed the connection before waitMs. */
  closed: boolean;
  elapsedMs: number;
}

/**
 * Sends exact bytes, as no HTTP client library would, and reads until the first response head is
 * complete or the daemon closes the connection.
 */
export function rawRequest(
  port: number,
  bytes: string | Buffer,
  options: { host?: string; localAddress?: string; waitMs?: number } = {},
): Promise<RawReply> {
  const { host = '127.0.0.1', localAddress, waitMs = 5000 } = options;
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, ...(localAddress && { localAddress }) });
    let text = '';
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1];
      resolve({ status: status === undefined ? null : Number(status), text, closed, elapsedMs: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.includes('\r\n\r\n')) finish(false);
    });
    socket.on('error', () => {});
    socket.on('close', () => finish(true));
  });
}

/** Opens a connection that says nothing; `closed` resolves with what the daemon sent when it closes it. */
export function openIdle(port: number, localAddress: string): Promise<{ socket: net.Socket; closed: Promise<string> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.on('error', () => {});
    const closed = new Promise<string>((done) => socket.on('close', () => done(received)));
    socket.once('connect', () => resolve({ socket, closed }));
    socket.once('error', reject);
  });
}

/** An HTTP request with headers fetch() will not set (Host), from a chosen source address. */
export function httpRequest(
  port: number,
  options: { method?: string; path: string; headers?: Record<string, string>; body?: unknown; host?: string; localAddress?: string },
): Promise<{ status: number; text: string }> {
  const { method = 'GET', path, headers = {}, body, host = '127.0.0.1', localAddress } = options;
  // A string goes as it is (a machine's text report); anything else as JSON.
  const payload = body === undefined || typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host,
        port,
        method,
        path,
        ...(localAddress && { localAddress }),
        agent: false,
        headers: {
          ...(payload !== undefined && { 'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json' }),
          ...headers,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, text }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}
