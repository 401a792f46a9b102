import { Worker } from 'node:worker_threads';

/**
 * The worker's whole program, as text: run from a string, it works the same from dist/ and from
 * the TypeScript sources the unit tests import. Each chunk is acknowledged once hashed, so the
 * daemon can bound what waits in the queue.
 */
const program = `
const { parentPort } = require('node:worker_threads');
const hash = require('node:crypto').createHash('sha256');
parentPort.on('message', (chunk) => {
  if (chunk === null) return parentPort.postMessage(hash.digest('hex'));
  hash.update(chunk);
  parentPort.postMessage(chunk.byteLength);
});
`;

/** Bytes handed to the worker and not yet hashed, at most: a download faster than hashing waits here. */
const maxQueuedBytes = 16 << 20;

/**
 * The sha256 of a stream, computed on a worker thread: ~1-2 s of CPU per GiB that no longer
 * holds up the event loop (sha256sum, without the CPU's SHA instructions, needs twice that).
 */
export class Sha256Worker {
  private readonly worker = new Worker(program, { eval: true });
  private queued = 0;
  private waiting: Array<() => void> = [];
  private digested: { resolve: (hex: string) => void; reject: (err: Error) => void } | null = null;
  private failure: Error | null = null;

  constructor() {
    this.worker.on('message', (message: number | string) => {
      if (typeof message === 'string') return this.digested?.resolve(message);
      this.queued -= message;
      if (this.queued <= maxQueuedBytes / 2) this.release();
    });
    this.worker.on('error', (err) => {
      this.failure = err;
      this.release();
      this.digested?.reject(err);
    });
  }

  /** Hands `chunk` over (a copy: the caller goes on using it); waits while too much is queued. */
  async update(chunk: Buffer): Promise<void> {
    this.throwIfFailed();
    this.queued += chunk.length;
    this.worker.postMessage(chunk);
    if (this.queued > maxQueuedBytes) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.throwIfFailed();
  }

  /** The hex digest of everything handed over; the worker then ends. */
  async digest(): Promise<string> {
    this.throwIfFailed();
    const hex = new Promise<string>((resolve, reject) => (this.digested = { resolve, reject }));
    this.worker.postMessage(null);
    const result = await hex;
    await this.worker.terminate();
    return result;
  }

  /** Ends the worker at once (a failed or cancelled import). */
  async stop(): Promise<void> {
    this.release();
    await this.worker.terminate();
  }

  private throwIfFailed(): void {
    if (this.failure !== null) throw this.failure;
  }

  private release(): void {
    for (const wake of this.waiting.splice(0)) wake();
  }
}
