import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { errorText, type Logger } from '../log.js';
import type { ClientConfig } from './config-variants.js';
import { firstExportFd } from './nbd-config.js';
import { killProcess } from './proc.js';

/** Built by `npm run build` (scripts/build-native.mjs) from native/warm-pool.c. */
export const defaultPoolShimPath = fileURLToPath(new URL('../../native/warm-pool.so', import.meta.url));

/** A hand-off is a few syscalls on each side; a process that has not answered by then is stuck, and its client is started the ordinary way. */
const handOffTimeoutMs = 2000;
/** Waits between refills after pool processes died before they were ready: 0.1 s doubling to 30 s, so a broken shim never spins. */
const retryBaseMs = 100;
const retryMaxMs = 30_000;
/** While the spawner has clients queued, the refill waits this long and asks again: a spawn blocks the event loop for milliseconds. */
const busyRecheckMs = 50;
const stderrKeepBytes = 2048;

export interface WarmPoolOptions {
  bin: string;
  /** Processes kept waiting, at most. */
  size: number;
  /** The environment a pool process starts with, or null while the pool must not be used (the shim cannot skip DH parameters, say). */
  env: () => NodeJS.ProcessEnv | null;
  /** Whether one more process may start: serving and waiting processes together stay within --max-connections. */
  mayGrow: (poolSize: number) => boolean;
  /** Whether clients are waiting for a start now: the refill runs only when they are not. */
  busy: () => boolean;
  /** A process became ready: queued clients can be handed to it. */
  onReady: () => void;
  /** A config path no one writes: a process the shim did not stop fails at once instead of serving anything. */
  unassignedConfig: string;
  shimPath?: string;
  log: Logger;
}

/** A pool process: exec, linking and library set-up are done; it waits in the shim for one client. */
export interface Member {
  readonly child: ChildProcess;
  /** The env() it started with: it is handed out only while env() still returns this same object. */
  readonly env: NodeJS.ProcessEnv;
  ready: boolean;
  stderr: string;
  readonly onStderr: (chunk: Buffer) => void;
}

/**
 * nbd-server processes started ahead of demand (`--nbd-warm-pool N`), each stopped by the
 * preloaded native/warm-pool.c before nbd-server's main(). A client is handed to one with its
 * socket (SCM_RIGHTS over Node's IPC channel), its images' descriptors and its own config's path;
 * from then on it is a connection's process like a spawned one, in its own session. A process
 * that dies while waiting is replaced and never handed out; one never handed is killed at stop,
 * and exits by itself when nbdmux dies (its channel closes).
 */
export class WarmPool {
  private readonly members = new Set<Member>();
  private readonly shimPath: string;
  private readonly envs = new WeakMap<NodeJS.ProcessEnv, NodeJS.ProcessEnv>();
  private refillTimer: NodeJS.Timeout | null = null;
  /** Pool processes that died before they were ready, in a row. */
  private failuresInRow = 0;
  private stopped = false;

  constructor(private readonly options: WarmPoolOptions) {
    this.shimPath = options.shimPath ?? defaultPoolShimPath;
  }

  /** Whether the shim was built: without it the pool stays empty. */
  get available(): boolean {
    return fs.existsSync(this.shimPath);
  }

  /** Processes started and not handed out, ready or not. */
  get size(): number {
    return this.members.size;
  }

  get readyCount(): number {
    let ready = 0;
    for (const member of this.members) if (member.ready) ready++;
    return ready;
  }

  /** A ready process started with today's env, now no longer the pool's; null when there is none. */
  take(): Member | null {
    const env = this.options.env();
    for (const member of this.members) {
      if (!member.ready || member.env !== env) continue;
      this.members.delete(member);
      this.scheduleRefill(0);
      return member;
    }
    return null;
  }

  /**
   * Hands `socket` and `config` to `member`. Resolves to its process once it has placed everything
   * and is about to read the config (nbdmux's copy of the socket is then the caller's to close),
   * or to null when anything failed: the member is killed, the socket is untouched, and the
   * client must be started the ordinary way.
   */
  handOff(member: Member, socket: net.Socket, config: ClientConfig): Promise<ChildProcess | null> {
    const { child } = member;
    let payload: string;
    try {
      const images = config.fds.map((fd, index) => {
        // The shim checks the file it opens through /proc against these: the bytes served are exactly this image's.
        const { dev, ino } = fs.fstatSync(fd, { bigint: true });
        return `${firstExportFd + index} ${fd} ${dev} ${ino}`;
      });
      payload = `${process.pid} ${config.fds.length} ${images.join(' ')}\n${config.path}`;
    } catch (err) {
      this.options.log.warn('cannot hand a client to a warm pool process', { pid: child.pid, error: errorText(err) });
      this.discard(member);
      return Promise.resolve(null);
    }
    return new Promise((resolve) => {
      const finish = (handed: boolean, why?: string) => {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        if (handed) {
          child.stderr?.off('data', member.onStderr);
          return resolve(child);
        }
        this.options.log.warn('a warm pool process could not take a client; starting it the ordinary way', {
          pid: child.pid,
          reason: why,
          stderr: member.stderr || undefined,
        });
        this.discard(member);
        resolve(null);
      };
      const onMessage = (message: unknown) => {
        if (isObject(message) && message.handed === 1) finish(true);
        else if (isObject(message) && typeof message.failed === 'string') finish(false, message.failed);
      };
      const onExit = () => finish(false, 'it exited during the hand-off');
      const timer = setTimeout(() => finish(false, `no answer within ${handOffTimeoutMs} ms`), handOffTimeoutMs);
      child.on('message', onMessage);
      child.once('exit', onExit);
      // keepOpen: nbdmux keeps its copy until the process says it holds everything, so a failed hand-off loses no client.
      child.send({ nbdmux: Buffer.from(payload).toString('hex') }, socket, { keepOpen: true }, (err) => {
        if (err) finish(false, `cannot send: ${err.message}`);
      });
    });
  }

  /** Fills the pool up to its size, one process at a time, whenever the spawner is idle. */
  refill(): void {
    this.scheduleRefill(0);
  }

  /** At shutdown: a process never handed a client serves nobody. */
  stop(): void {
    this.stopped = true;
    if (this.refillTimer !== null) clearTimeout(this.refillTimer);
    for (const member of [...this.members]) this.discard(member);
  }

  private scheduleRefill(delayMs: number): void {
    if (this.stopped || this.refillTimer !== null) return;
    this.refillTimer = setTimeout(() => {
      this.refillTimer = null;
      this.refillOne();
    }, delayMs);
  }

  private refillOne(): void {
    const env = this.options.env();
    // Processes started with another env (TLS enabled since, say) would run nbd-server with the wrong shims.
    for (const member of [...this.members]) if (member.env !== env) this.discard(member);
    if (env === null || this.members.size >= this.options.size || !this.options.mayGrow(this.members.size)) return;
    if (this.options.busy()) return this.scheduleRefill(busyRecheckMs);
    this.startMember(env);
    if (this.members.size < this.options.size) this.scheduleRefill(0);
  }

  private startMember(env: NodeJS.ProcessEnv): void {
    let child: ChildProcess;
    try {
      child = spawn(this.options.bin, ['-d', '-C', this.options.unassignedConfig], {
        // The report pipe (fd 3) and stderr belong to the connection once handed; the channel's fd 4 is moved by the shim.
        stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'ipc'],
        detached: true,
        env: this.poolEnv(env),
      });
    } catch (err) {
      return this.startFailed(`cannot start a pool process: ${errorText(err)}`);
    }
    const member: Member = {
      child,
      env,
      ready: false,
      stderr: '',
      onStderr: (chunk: Buffer) => {
        member.stderr = (member.stderr + chunk.toString('utf8')).slice(-stderrKeepBytes);
      },
    };
    this.members.add(member);
    child.unref();
    child.channel?.unref();
    child.stderr?.on('data', member.onStderr);
    child.on('error', (err) => {
      if (this.members.delete(member)) this.startFailed(`a pool process failed: ${errorText(err)}`);
    });
    child.on('message', (message: unknown) => {
      if (!isObject(message) || message.ready !== 1 || !this.members.has(member)) return;
      member.ready = true;
      this.failuresInRow = 0;
      this.options.onReady();
    });
    child.once('exit', (exitCode, signal) => {
      // Gone while waiting (killed, or the shim gave up): replaced, and never handed a client.
      if (!this.members.delete(member)) return;
      if (member.ready) return this.scheduleRefill(0);
      this.startFailed(`a pool process ended before it was ready (exit ${exitCode ?? signal}): ${member.stderr.trim() || 'no message'}`);
    });
  }

  private startFailed(reason: string): void {
    this.failuresInRow++;
    if (this.failuresInRow === 1)
      this.options.log.warn('the warm pool cannot start processes; clients are started the ordinary way meanwhile', { reason });
    this.scheduleRefill(Math.min(retryMaxMs, retryBaseMs * 2 ** (this.failuresInRow - 1)));
  }

  private discard(member: Member): void {
    this.members.delete(member);
    if (member.child.pid !== undefined) killProcess(member.child.pid);
  }

  private poolEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
    let poolEnv = this.envs.get(env);
    if (poolEnv === undefined) {
      const preload = env.LD_PRELOAD ? `${this.shimPath}:${env.LD_PRELOAD}` : this.shimPath;
      poolEnv = { ...env, LD_PRELOAD: preload, NBDMUX_WARM_POOL: '1' };
      this.envs.set(env, poolEnv);
    }
    return poolEnv;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}
