import { Worker } from 'node:worker_threads';

/**
 * The worker's whole program, as text: run from a string, it works the same from dist/ and from
 * the TypeScript sources the unit tests import. It hashes a filled slot of the shared memory,
 * then hands the slot back.
 */
const program = `
const { parentPort, workerData } = require('node:worker_threads');
const hash = require('node:crypto').createHash('sha256');
const memory = Buffer.from(workerData.shared);
parentPort.on('message', (message) => {
  if (message === null) return parentPort.postMessage(hash.digest('hex'));
  const [slot, length] = message;
  hash.update(memory.subarray(slot * workerData.slotBytes, slot * workerData.slotBytes + length));
  parentPort.postMessage(slot);
});
`;

/** Bytes handed over in one message: a download's 64 KiB chunks gather here first. */
const slotBytes = 1 << 20;
/** Bytes handed to the worker and not yet hashed, at most: a download faster than hashing waits for a slot. */
const slots = 16;

/**
 * The sha256 of a stream, computed on a worker thread: ~1-2 s of CPU per GiB that no longer
 * holds up the event loop. Chunks are copied into memory shared with the worker (a memcpy), not
 * posted one by one: a structured clone of every 64 KiB chunk cost the event loop about as much
 * as hashing it there (the import bench's CPU profile: 0.7 s per GiB).
 */
export class Sha256Worker {
  private readonly shared = new SharedArrayBuffer(slots * slotBytes);
  private readonly memory = Buffer.from(this.shared);
  private readonly worker = new Worker(program, { eval: true, workerData: { shared: this.shared, slotBytes } });
  private readonly free: number[] = Array.from({ length: slots }, (_, slot) => slot);
  /** The slot being filled, and how far. */
  private filling: { slot: number; length: number } | null = null;
  private waiting: Array<() => void> = [];
  /** Updates run one after the other, so bytes land in the order they were handed over. */
  private tail: Promise<void> = Promise.resolve();
  private digested: { resolve: (hex: string) => void; reject: (err: Error) => void } | null = null;
  private failure: Error | null = null;
  private stopped = false;

  constructor() {
    this.worker.on('message', (message: number | string) => {
      if (typeof message === 'string') return this.digested?.resolve(message);
      this.free.push(message);
      this.release();
    });
    this.worker.on('error', (err) => {
      this.failure = err;
      this.release();
      this.digested?.reject(err);
    });
  }

  /** Takes `chunk` in (copied: the caller may reuse it once this resolves); waits while every slot is queued. */
  update(chunk: Buffer): Promise<void> {
    this.tail = this.tail.then(() => this.copyIn(chunk));
    return this.tail;
  }

  /** The hex digest of everything handed over; the worker then ends. */
  async digest(): Promise<string> {
    await this.tail;
    this.throwIfFailed();
    this.send();
    const hex = new Promise<string>((resolve, reject) => (this.digested = { resolve, reject }));
    this.worker.postMessage(null);
    const result = await hex;
    await this.worker.terminate();
    return result;
  }

  /** Ends the worker at once (a failed or cancelled import); updates still waiting return, their bytes unhashed. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.release();
    await this.worker.terminate();
  }

  private async copyIn(chunk: Buffer): Promise<void> {
    for (let offset = 0; offset < chunk.length && !this.stopped;) {
      this.throwIfFailed();
      if (this.filling === null) {
        const slot = this.free.pop();
        if (slot === undefined) {
          await new Promise<void>((resolve) => this.waiting.push(resolve));
          continue;
        }
        this.filling = { slot, length: 0 };
      }
      const { slot, length } = this.filling;
      const copied = chunk.copy(this.memory, slot * slotBytes + length, offset, offset + slotBytes - length);
      offset += copied;
      this.filling.length += copied;
      if (this.filling.length === slotBytes) this.send();
    }
    this.throwIfFailed();
  }

  /** Hands the slot being filled to the worker. */
  private send(): void {
    if (this.filling === null || this.filling.length === 0) return;
    this.worker.postMessage([this.filling.slot, this.filling.length]);
    this.filling = null;
  }

  private throwIfFailed(): void {
    if (this.failure !== null) throw this.failure;
  }

  private release(): void {
    for (const wake of this.waiting.splice(0)) wake();
  }
}
