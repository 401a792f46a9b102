import { createHook } from 'node:async_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { killEverything, startDaemon, waitFor, type RunningDaemon } from '../testkit/daemon.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("the typed client's WebSocket link", () => {
  let daemon: RunningDaemon;
  beforeAll(async () => {
    daemon = await startDaemon();
  });
  afterAll(() => killEverything(daemon ? [daemon.dataDir] : []));

  it('reports the link up and down (the dashboard badge), reconnecting within 2 s of the daemon', async () => {
    const changes: boolean[] = [];
    const client = createNbdmuxClient({ url: daemon.url, onLinkChange: (up) => changes.push(up) });
    await client.system.info.query();
    expect(changes, 'queries go over HTTP: no socket is opened for them').toEqual([]);

    const snapshots: number[] = [];
    const subscription = client.status.stream.subscribe(undefined, { onData: (status) => snapshots.push(status.health.nbdPort ?? 0) });
    await waitFor('the link to come up', () => (changes.length > 0 ? true : undefined));
    expect(changes).toEqual([true]);

    const port = daemon.httpPort;
    await daemon.stop();
    await waitFor('the link to go down', () => (changes.at(-1) === false ? true : undefined));
    // Down long enough for the retry interval to reach its cap (attempts 0.25 s, 0.75 s, 1.75 s, 3.75 s... after the loss).
    await sleep(3_500);
    daemon = await startDaemon({ dataDir: daemon.dataDir, args: ['--port', String(port)] });
    const back = Date.now();
    await waitFor('the link to come back', () => (changes.at(-1) === true ? true : undefined));
    console.log(`daemon listening to link up again: ${Date.now() - back} ms`);
    // At most one retry interval (2 s) plus the attempt itself after the daemon listens again.
    expect(Date.now() - back).toBeLessThan(2_500);
    // The subscription resumed on the new socket: the new daemon's snapshot arrives.
    await waitFor('a snapshot from the new daemon', () => (snapshots.includes(daemon.nbdPort) ? true : undefined));

    const before = changes.length;
    subscription.unsubscribe();
    await waitFor('the socket to close after the last subscription', () => (changes.length > before ? true : undefined), 3_000);
    expect(changes.slice(before)).toEqual([false]);
  }, 30_000);

  it('leaves the process idle while a subscription waits for news', async () => {
    const client = createNbdmuxClient({ url: daemon.url });
    let started!: () => void;
    const subscribed = new Promise<void>((resolve) => (started = resolve));
    const subscription = client.events.stream.subscribe({}, { onStarted: () => started() });
    await subscribed;

    // Every timer armed in this process while nothing happens: a re-arming idle timer shows as hundreds.
    let timers = 0;
    const hook = createHook({ init: (_id, type) => void (type === 'Timeout' && timers++) }).enable();
    await sleep(1_000);
    hook.disable();
    subscription.unsubscribe();
    console.log(`timers armed in 1 s with one idle subscription: ${timers}`);
    expect(timers).toBeLessThan(20);
  });
});
