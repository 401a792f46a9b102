import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { errorText, type Logger } from '../log.js';

/**
 * Less free space than this counts as full: a SQLite commit or a config rewrite is about to
 * fail. Space counts as back only once this much more is free than when it ran out, so a data
 * dir on the edge does not flap between full and writable.
 */
const marginBytes = 256 * 1024;
const recheckMs = 2000;

/** Whether an error is the data dir running out of space, in SQLite's words or the file system's. */
export function isOutOfSpace(err: unknown): boolean {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return code === 'SQLITE_FULL' || code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * Whether the data dir can take writes. A full disk must not crash the daemon nor cut a booting
 * machine: writers report it here instead of throwing, health shows it, and once space is back
 * `writable` fires (checked every 2 s while full) and recording resumes.
 */
export class DataDirSpace extends EventEmitter<{ writable: [{ fullSince: string }] }> {
  private full: { since: string; writableAtBytes: number } | null = null;
  private recheck: NodeJS.Timeout | undefined;

  constructor(
    readonly dataDir: string,
    private readonly log: Logger,
  ) {
    super();
  }

  get problem(): string | null {
    if (this.full === null) return null;
    return `the data dir ${this.dataDir} is full (since ${this.full.since}): events and connection records are not written and changes are refused; free space there and nbdmux resumes by itself`;
  }

  /** Runs one write; when the data dir is out of space, reports it and answers undefined instead of throwing. */
  tryWrite<T>(write: () => T): T | undefined {
    try {
      return write();
    } catch (err) {
      if (!isOutOfSpace(err)) throw err;
      this.reportFull(err);
      return undefined;
    }
  }

  /** Logged once per time the data dir fills, not once per failed write; `cause` is the failed write's error. */
  reportFull(cause: unknown): void {
    if (this.full !== null) return;
    this.full = { since: new Date().toISOString(), writableAtBytes: this.freeBytes() + marginBytes };
    this.log.error('data dir full: events and connection records are not written and changes are refused until space is freed', {
      dataDir: this.dataDir,
      error: errorText(cause),
    });
    this.recheck = setInterval(() => this.check(), recheckMs).unref();
  }

  /** Looks at the free space now: too little makes the data dir full, enough again makes it writable. */
  check(): void {
    const free = this.freeBytes();
    if (this.full === null) {
      if (free < marginBytes) this.reportFull(`only ${free} bytes free`);
      return;
    }
    if (free < this.full.writableAtBytes) return;
    const fullSince = this.full.since;
    this.full = null;
    clearInterval(this.recheck);
    this.log.info('data dir has space again: recording resumes', { dataDir: this.dataDir, fullSince, freeBytes: free });
    this.emit('writable', { fullSince });
  }

  stop(): void {
    clearInterval(this.recheck);
  }

  private freeBytes(): number {
    const stats = fs.statfsSync(this.dataDir);
    return stats.bavail * stats.bsize;
  }
}
