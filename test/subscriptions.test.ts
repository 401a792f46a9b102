import path from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventRow } from '../src/db/schema.js';
import type { StatusSnapshot } from '../src/status/snapshot.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, startSlowReader } from '../testkit/nbd.js';
import { trpcClient } from './helpers/trpc.js';

describe('live subscriptions over WebSocket', () => {
  let daemon: RunningDaemon;
  let images: string;
  let image: string;
  beforeAll(async () => {
    daemon = await startDaemon();
    images = tempDir('nbdmux-images-');
    image = makeImage(images, 'live.img', 2 * 1024 * 1024);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  function collectEvents(lastEventId?: string) {
    const events: Array<{ id: string; data: EventRow }> = [];
    const subscription = trpcClient(daemon.url).events.stream.subscribe({ lastEventId }, { onData: (e) => events.push(e as never) });
    return { events, stop: () => subscription.unsubscribe() };
  }

  it('streams each event as it happens', async () => {
    const stream = collectEvents();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const sent = Date.now();
    expect((await api(daemon, 'POST', '/exports', { name: 'first', file: image })).status).toBe(201);
    const created = await waitFor('export.created to arrive', () => stream.events.find((e) => e.data.type === 'export.created'));
    console.log(`event to subscriber: ${Date.now() - sent} ms`);
    expect(created.data).toMatchObject({ exportName: 'first', details: { readonly: true, size: 2 * 1024 * 1024 } });
    expect(created.id).toBe(String(created.data.id));
    stream.stop();
  });

  it('resumes after a reconnect with everything missed, in order, nothing twice', async () => {
    const first = collectEvents();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await api(daemon, 'POST', '/exports', { name: 'before-gap', file: image })).status).toBe(201);
    const lastSeen = await waitFor('the event before the gap', () => first.events.find((e) => e.data.exportName === 'before-gap'));
    first.stop();

    for (const name of ['gap-1', 'gap-2', 'gap-3']) expect((await api(daemon, 'POST', '/exports', { name, file: image })).status).toBe(201);
    expect((await api(daemon, 'DELETE', '/exports/gap-2')).status).toBe(204);

    const resumed = collectEvents(lastSeen.id);
    await waitFor('the missed events', () => (resumed.events.length >= 4 ? true : undefined));
    expect((await api(daemon, 'POST', '/exports', { name: 'after-gap', file: image })).status).toBe(201);
    await waitFor('the live event after the replay', () => resumed.events.find((e) => e.data.exportName === 'after-gap'));
    resumed.stop();

    const names = resumed.events.map((e) => `${e.data.type} ${e.data.exportName}`);
    expect(names).toEqual([
      'export.created gap-1',
      'export.created gap-2',
      'export.created gap-3',
      'export.removed gap-2',
      'export.created after-gap',
    ]);
    const ids = resumed.events.map((e) => Number(e.id));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(ids[0]).toBeGreaterThan(Number(lastSeen.id));
  });

  it('sends a status snapshot on subscribe, then live connections with their bytes', async () => {
    const client = trpcClient(daemon.url);
    const snapshots: StatusSnapshot[] = [];
    const subscription = client.status.stream.subscribe(undefined, { onData: (s) => snapshots.push(s as never) });
    const first = await waitFor('the first snapshot', () => snapshots[0]);
    expect(first.health).toMatchObject({ ok: true, nbdListening: true, nbdPort: daemon.nbdPort });
    expect(first.exports.map((e) => e.name)).toContain('first');

    const reader = startSlowReader(daemon.nbdUri('first'), path.join(images, 'stop-status-reader'));
    await reader.connected;
    const withReader = await waitFor('a snapshot with the reader and its bytes', () =>
      snapshots.find((s) => s.connections.some((c) => c.exportName === 'first' && c.bytesSent > 0)),
    );
    expect(withReader.connections[0]).toMatchObject({ exportName: 'first', clientAddress: '127.0.0.1', live: true });
    expect(withReader.exports.find((e) => e.name === 'first')?.connections).toBe(1);

    await reader.finish();
    await waitFor('a snapshot without the reader', () => (snapshots.at(-1)!.connections.length === 0 ? true : undefined));
    subscription.unsubscribe();
  });

  it('leaves no listener behind after 100 subscribe/unsubscribe cycles', async () => {
    const client = trpcClient(daemon.url);
    for (let i = 0; i < 100; i++) {
      let started!: () => void;
      const ready = new Promise<void>((resolve) => (started = resolve));
      const events = client.events.stream.subscribe({}, { onStarted: () => started() });
      const status = client.status.stream.subscribe(undefined, { onData: () => started() });
      await ready;
      events.unsubscribe();
      status.unsubscribe();
    }
    // What is left are the two listeners held for the daemon's life: /metrics' (src/metrics.ts) and
    // the machines' stages (src/machines/boots.ts).
    const stats = await waitFor('every listener to be released', async () => {
      const current = await trpcClient(daemon.url).system.stats.query();
      return current.eventListeners === 2 ? current : undefined;
    });
    expect(stats.eventListeners).toBe(2);
  });

  it('refuses WebSocket upgrades on other paths and from other origins', async () => {
    const statusOf = (url: string, headers: Record<string, string> = {}) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(url, { headers });
        ws.on('unexpected-response', (_req, res) => (resolve(res.statusCode ?? 0), ws.terminate()));
        ws.on('open', () => (resolve(101), ws.close()));
        ws.on('error', () => {});
      });
    const base = daemon.url.replace(/^http/, 'ws');
    expect(await statusOf(`${base}/elsewhere`)).toBe(404);
    expect(await statusOf(`${base}/trpc`, { origin: 'http://evil.example' })).toBe(403);
    expect(await statusOf(`${base}/trpc`, { origin: daemon.url })).toBe(101);
  });
});
