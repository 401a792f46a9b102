import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NbdmuxStreamEvent } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { rssBytes } from '../testkit/proc.js';
import { startProcess } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

const historyEvents = 23_000;
const subscribers = 20;

/** A long history, written straight into the state.db of a daemon that is not running. */
function addHistory(dataDir: string, count: number): void {
  const db = new Database(path.join(dataDir, 'state.db'));
  const insert = db.prepare('INSERT INTO events (at, type, export_name, details) VALUES (?, ?, NULL, ?)');
  db.transaction(() => {
    for (let i = 0; i < count; i++)
      insert.run(
        new Date().toISOString(),
        'connection.opened',
        JSON.stringify({ connection: i, client: '127.0.0.2', port: 40000 + (i % 20000) }),
      );
  })();
  db.close();
}

async function dataDirWithHistory(count: number): Promise<string> {
  const first = await startDaemon();
  expect(await first.stop()).toBe(0);
  addHistory(first.dataDir, count);
  return first.dataDir;
}

describe('replaying a long history to resuming subscribers', () => {
  let daemon: RunningDaemon;
  beforeAll(async () => {
    daemon = await startDaemon({ dataDir: await dataDirWithHistory(historyEvents) });
  });
  afterAll(() => killEverything(daemon ? [daemon.dataDir] : []));

  it('tells each subscriber too far behind to list instead, keeping memory and /healthz in bounds', async () => {
    const pid = daemon.child.pid!;
    const newest = (await trpcClient(daemon.url).events.list.query({ limit: 1 }))[0]!.id;
    expect(newest).toBeGreaterThan(historyEvents);
    const rssBefore = rssBytes(pid);
    let rssPeak = rssBefore;
    let slowestHealthMs = 0;
    const received: NbdmuxStreamEvent[][] = Array.from({ length: subscribers }, () => []);
    const client = trpcClient(daemon.url);
    const subscriptions = received.map((items) =>
      client.events.stream.subscribe({ lastEventId: '0' }, { onData: ({ data }) => items.push(data) }),
    );

    // Meanwhile a monitor keeps asking for health; each answer must come fast.
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline || received.some((items) => items.length === 0)) {
      const asked = Date.now();
      expect((await api(daemon, 'GET', '/healthz')).status).toBe(200);
      slowestHealthMs = Math.max(slowestHealthMs, Date.now() - asked);
      rssPeak = Math.max(rssPeak, rssBytes(pid));
      expect(Date.now() - deadline, 'every subscriber heard back within 10 s').toBeLessThan(10_000);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    console.log(
      `RSS ${Math.round(rssBefore / 2 ** 20)} MiB before, ${Math.round(rssPeak / 2 ** 20)} MiB at most; slowest /healthz ${slowestHealthMs} ms`,
    );
    for (const items of received) {
      expect(items).toHaveLength(1);
      expect(items[0]).toMatchObject({ type: 'replay.skipped', id: newest, details: { skipped: newest, afterId: 0 } });
    }
    expect(slowestHealthMs).toBeLessThan(1000);
    expect(rssPeak - rssBefore).toBeLessThan(60 * 2 ** 20);

    // After the signal the stream carries on live.
    const images = tempDir('nbdmux-images-');
    fs.writeFileSync(path.join(images, 'live.img'), Buffer.alloc(4096));
    expect((await api(daemon, 'POST', '/exports', { name: 'live', file: path.join(images, 'live.img') })).status).toBe(201);
    await waitFor('the live event on every subscriber', () =>
      received.every((items) => items.some((item) => item.type === 'export.created')) ? true : undefined,
    );
    for (const subscription of subscriptions) subscription.unsubscribe();
  }, 60_000);

  it('replays a history below the cap in full, in order, in pages', async () => {
    const newest = (await trpcClient(daemon.url).events.list.query({ limit: 1 }))[0]!.id;
    const behind = 1_234;
    const items: NbdmuxStreamEvent[] = [];
    const subscription = trpcClient(daemon.url).events.stream.subscribe(
      { lastEventId: String(newest - behind) },
      { onData: ({ data }) => items.push(data) },
    );
    await waitFor('the whole replay', () => (items.length >= behind ? true : undefined));
    subscription.unsubscribe();
    expect(items.map((item) => item.id)).toEqual(Array.from({ length: behind }, (_, i) => newest - behind + 1 + i));
  });
});

describe('nbdmux watch across a gap too long to replay', () => {
  let daemon: RunningDaemon;
  afterAll(() => killEverything(daemon ? [daemon.dataDir] : []));

  it('says how many events it missed and where they are, then carries on live', async () => {
    daemon = await startDaemon();
    const cli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));
    const watch = startProcess(process.execPath, [cli, 'watch'], { env: { ...process.env, NBDMUX_URL: daemon.url } });
    try {
      await waitFor('the first status line', () => (watch.stdout().includes('  status  ') ? true : undefined));
      // While the daemon is away, more happens than a replay may carry.
      const port = daemon.httpPort;
      expect(await daemon.stop()).toBe(0);
      addHistory(daemon.dataDir, 12_000);
      daemon = await startDaemon({ dataDir: daemon.dataDir, args: ['--port', String(port)] });
      const skipped = await waitFor(
        'the skip line',
        () =>
          /^\d\d:\d\d:\d\d {2}replay\.skipped +- +(\d+) events missed, too many to replay: events\.list \(or the dashboard\) has them$/m.exec(
            watch.stdout(),
          ) ?? undefined,
        20_000,
      );
      expect(Number(skipped[1])).toBeGreaterThanOrEqual(12_000);
      expect(watch.stdout()).not.toContain('connection.opened');
      const images = tempDir('nbdmux-images-');
      fs.writeFileSync(path.join(images, 'after.img'), Buffer.alloc(4096));
      expect((await api(daemon, 'POST', '/exports', { name: 'after', file: path.join(images, 'after.img') })).status).toBe(201);
      await waitFor('the live event after the skip', () => (/ {2}export\.created +after +/.test(watch.stdout()) ? true : undefined));
    } finally {
      watch.child.kill('SIGINT');
    }
  }, 60_000);
});
