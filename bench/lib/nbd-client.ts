import net from 'node:net';

/**
 * A minimal NBD client (fixed newstyle handshake, NBD_OPT_GO, simple replies) living in the
 * benchmark's own process: it times the server's part of a handshake without the few tens of
 * milliseconds a client program such as nbdinfo spends starting up, and holds many connections
 * cheaply. Reads are for checking bytes; throughput is measured with libnbd (nbdsh).
 */

const optionMagic = Buffer.from('IHAVEOPT');
const replyMagic = 0x3e889045565a9n;
const requestMagic = 0x25609513;
const simpleReplyMagic = 0x67446698;
const optGo = 7;
const repAck = 1;
const repInfo = 3;
const infoExport = 0;
const cmdRead = 0;
const cmdDisconnect = 2;
const flagFixedNewstyle = 1;
const flagNoZeroes = 2;

export interface NbdConnection {
  /** Export size in bytes, from the server's NBD_INFO_EXPORT reply. */
  size: number;
  read(offset: number, length: number): Promise<Buffer>;
  /** Sends NBD_CMD_DISC and waits for the server to close the connection. */
  disconnect(): Promise<void>;
  destroy(): void;
}

/** Connects and negotiates `name` with NBD_OPT_GO; resolves once the export is ready for I/O. */
export async function connectNbd(port: number, name: string, timeoutMs = 30_000): Promise<NbdConnection> {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  const reader = new SocketReader(socket);
  const timer = setTimeout(() => socket.destroy(new Error(`NBD handshake with ${name} timed out after ${timeoutMs} ms`)), timeoutMs);
  try {
    const greeting = await reader.read(18);
    if (greeting.toString('latin1', 0, 8) !== 'NBDMAGIC' || !greeting.subarray(8, 16).equals(optionMagic)) {
      throw new Error('not a newstyle NBD server');
    }
    const serverFlags = greeting.readUInt16BE(16);
    if (!(serverFlags & flagFixedNewstyle)) throw new Error('server does not speak fixed newstyle');
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(flagFixedNewstyle | (serverFlags & flagNoZeroes));
    const nameBytes = Buffer.from(name, 'utf8');
    const header = Buffer.alloc(16);
    optionMagic.copy(header, 0);
    header.writeUInt32BE(optGo, 8);
    header.writeUInt32BE(4 + nameBytes.length + 2, 12);
    const nameLength = Buffer.alloc(4);
    nameLength.writeUInt32BE(nameBytes.length);
    socket.write(Buffer.concat([clientFlags, header, nameLength, nameBytes, Buffer.alloc(2)]));

    let size: number | null = null;
    for (;;) {
      const reply = await reader.read(20);
      if (reply.readBigUInt64BE(0) !== replyMagic) throw new Error('bad option reply magic');
      const type = reply.readUInt32BE(12);
      const data = await reader.read(reply.readUInt32BE(16));
      if (type & 0x80000000) throw new Error(`server refused export ${name}: ${data.toString('utf8') || `error ${type & 0x7fffffff}`}`);
      if (type === repInfo && data.readUInt16BE(0) === infoExport) size = Number(data.readBigUInt64BE(2));
      if (type === repAck) break;
    }
    if (size === null) throw new Error('server sent no export size');
    clearTimeout(timer);
    return new Connection(socket, reader, size);
  } catch (err) {
    clearTimeout(timer);
    socket.destroy();
    throw err;
  }
}

class Connection implements NbdConnection {
  private nextHandle = 1n;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly socket: net.Socket,
    private readonly reader: SocketReader,
    readonly size: number,
  ) {}

  read(offset: number, length: number): Promise<Buffer> {
    // One request at a time: replies then come back in order.
    const result = this.queue.then(async () => {
      const handle = this.nextHandle++;
      this.socket.write(request(cmdRead, handle, offset, length));
      const reply = await this.reader.read(16);
      if (reply.readUInt32BE(0) !== simpleReplyMagic || reply.readBigUInt64BE(8) !== handle) throw new Error('bad read reply');
      const error = reply.readUInt32BE(4);
      if (error !== 0) throw new Error(`read at ${offset} failed with NBD error ${error}`);
      return this.reader.read(length);
    });
    this.queue = result.catch(() => {});
    return result;
  }

  async disconnect(): Promise<void> {
    await this.queue;
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    this.socket.end(request(cmdDisconnect, this.nextHandle++, 0, 0));
    await closed;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function request(type: number, handle: bigint, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(28);
  buf.writeUInt32BE(requestMagic, 0);
  buf.writeUInt16BE(0, 4);
  buf.writeUInt16BE(type, 6);
  buf.writeBigUInt64BE(handle, 8);
  buf.writeBigUInt64BE(BigInt(offset), 16);
  buf.writeUInt32BE(length, 24);
  return buf;
}

/** Hands out exactly n bytes at a time from a socket, in order. */
class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiting: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  constructor(socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.deliver();
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed by the server')));
  }

  read(n: number): Promise<Buffer> {
    if (this.waiting) throw new Error('one read at a time');
    return new Promise((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.deliver();
    });
  }

  private deliver(): void {
    const waiting = this.waiting;
    if (!waiting) return;
    if (this.buffered >= waiting.n) {
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = all.length > waiting.n ? [all.subarray(waiting.n)] : [];
      this.buffered -= waiting.n;
      this.waiting = null;
      waiting.resolve(all.subarray(0, waiting.n));
    } else if (this.failure) {
      this.waiting = null;
      waiting.reject(this.failure);
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.deliver();
  }
}
