import type { PowerState } from '../model/event-map.js';
import type { BmcSettings } from './bmcs.js';
import { failureText, type PowerControl } from './control.js';
import { runIpmitool } from './ipmitool.js';

/** A machine's power state as last polled: `state` null when the BMC did not say (`error` says why). */
export interface PolledPower {
  state: PowerState | null;
  at: string;
  error: string | null;
}

/**
 * One poller for every machine with a BMC: a round asks each BMC for its power state through the
 * power queue (bounded parallelism, shared with the operator's actions), and the next round starts
 * `intervalMs` after the last one ended, so a fleet of silent BMCs slows the rounds, never piles
 * them up. Views read the cache, never a BMC. Polls are not events: they would drown the log.
 */
export class PowerPoller {
  private readonly cache = new Map<number, PolledPower>();
  private timer: NodeJS.Timeout | null = null;
  private round: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly bmcs: BmcSettings,
    private readonly power: PowerControl,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.round;
  }

  /** The cached state of a machine; undefined when it has not been polled (yet). */
  get(machineId: number): PolledPower | undefined {
    return this.cache.get(machineId);
  }

  /** One round now: for tests and for a start that wants a first answer soon. */
  pollOnce(): Promise<void> {
    this.round ??= this.poll().finally(() => (this.round = null));
    return this.round;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.pollOnce().then(() => this.schedule(this.intervalMs)), delayMs);
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    const targets = this.bmcs.targets();
    const polled = new Set(targets.map(({ machineId }) => machineId));
    for (const id of this.cache.keys()) if (!polled.has(id)) this.cache.delete(id);
    await Promise.all(
      targets.map(async ({ machineId, name, target }) => {
        if (this.stopped) return;
        const answer = await this.power.queue.run(() => runIpmitool(target, 'status', this.power.options.bounds));
        const at = new Date().toISOString();
        this.cache.set(
          machineId,
          answer.ok
            ? { state: answer.state, at, error: null }
            : { state: null, at, error: failureText(name, target, answer.failure, answer.answer) },
        );
      }),
    );
  }
}
