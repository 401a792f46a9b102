import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseCommandLine } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { Retention } from '../src/retention.js';
import type { EventStreamItem } from '../src/router/events.js';
import { testControlPlane, type TestControlPlane } from './helpers/context.js';

const day = 24 * 60 * 60 * 1000;
const now = Date.parse('2026-06-01T00:00:00.000Z');
const daysAgo = (days: number) => new Date(now - days * day).toISOString();

/** `count` events at `at`, written straight into the table as months of history would have been. */
function addEvents(plane: TestControlPlane, count: number, at: string): void {
  const insert = plane.db.$client.prepare('INSERT INTO events (at, type, export_name, details) VALUES (?, ?, NULL, ?)');
  plane.db.$client.transaction(() => {
    for (let i = 0; i < count; i++)
      insert.run(at, 'connection.opened', JSON.stringify({ connection: i, client: '127.0.0.2', port: 40000 }));
  })();
}

function addConnection(plane: TestControlPlane, openedAt: string, closedAt: string | null): void {
  plane.db.$client
    .prepare("INSERT INTO connections (client_address, client_port, opened_at, closed_at, outcome) VALUES ('127.0.0.2', 40000, ?, ?, ?)")
    .run(openedAt, closedAt, closedAt === null ? null : 'closed');
}

const countRows = (plane: TestControlPlane, table: 'events' | 'connections') =>
  (plane.db.$client.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
const eventIds = (plane: TestControlPlane) =>
  plane.db.$client.prepare('SELECT min(id) AS oldest, max(id) AS newest FROM events').get() as { oldest: number; newest: number };

describe('retention', () => {
  let plane: TestControlPlane;
  const retention = (keepNewestEvents = 100) => new Retention(plane.db, { retainDays: 30, keepNewestEvents, log: createLogger('error') });
  beforeEach(() => {
    plane = testControlPlane();
  });
  afterEach(() => plane.close());

  it('deletes events older than --retain-days, in batches, oldest first', async () => {
    addEvents(plane, 1_234, daysAgo(40));
    addEvents(plane, 300, daysAgo(29));
    expect(await retention().prune(now)).toEqual({ events: 1_234, connections: 0 });
    expect(countRows(plane, 'events')).toBe(300);
    expect(eventIds(plane)).toEqual({ oldest: 1_235, newest: 1_534 });
  });

  it('keeps the newest events a resuming subscriber may be replayed, however old', async () => {
    addEvents(plane, 1_000, daysAgo(90));
    expect(await retention(100).prune(now)).toEqual({ events: 900, connections: 0 });
    expect(eventIds(plane)).toEqual({ oldest: 901, newest: 1_000 });
  });

  it('deletes connections closed before the cutoff, never a live one', async () => {
    for (let i = 0; i < 1_200; i++) addConnection(plane, daysAgo(41), daysAgo(40));
    addConnection(plane, daysAgo(41), daysAgo(1));
    addConnection(plane, daysAgo(400), null);
    expect(await retention().prune(now)).toEqual({ events: 0, connections: 1_200 });
    const left = plane.db.$client.prepare('SELECT opened_at, closed_at FROM connections ORDER BY id').all();
    expect(left).toEqual([
      { opened_at: daysAgo(41), closed_at: daysAgo(1) },
      { opened_at: daysAgo(400), closed_at: null },
    ]);
  });

  it('tells a subscriber resuming from a pruned id how many are gone, then replays those kept', async () => {
    addEvents(plane, 150, daysAgo(40));
    addEvents(plane, 20, daysAgo(1));
    await retention(10).prune(now);
    const stream = await plane.caller.events.stream({ lastEventId: '30' });
    const items: EventStreamItem[] = [];
    for await (const [, data] of stream as AsyncIterable<[string, EventStreamItem]>) {
      items.push(data);
      if (data.id === 170) break; // the newest event: the replay is over
    }
    expect(items[0]).toMatchObject({ type: 'replay.skipped', id: 150, details: { reason: 'pruned', afterId: 30, skipped: 120 } });
    expect(items.slice(1).map((item) => item.id)).toEqual(Array.from({ length: 20 }, (_, i) => 151 + i));
    expect(plane.events.subscribers).toBe(0);
  });

  it('sends no gap signal to a subscriber whose next event is kept', async () => {
    addEvents(plane, 150, daysAgo(40));
    addEvents(plane, 20, daysAgo(1));
    await retention(10).prune(now);
    const stream = await plane.caller.events.stream({ lastEventId: '150' });
    for await (const [, data] of stream as AsyncIterable<[string, EventStreamItem]>) {
      expect(data).toMatchObject({ id: 151, type: 'connection.opened' });
      break;
    }
  });
});

describe('--retain-days', () => {
  const retainDays = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
    const request = parseCommandLine(['--data-dir', '/tmp/x', ...argv], env);
    return request.kind === 'run' ? request.config.retainDays : undefined;
  };
  it('defaults to 30, is read from NBDMUX_RETAIN_DAYS, and refuses less than a day', () => {
    expect(retainDays([])).toBe(30);
    expect(retainDays([], { NBDMUX_RETAIN_DAYS: '7' })).toBe(7);
    expect(retainDays(['--retain-days', '90'], { NBDMUX_RETAIN_DAYS: '7' })).toBe(90);
    expect(() => retainDays(['--retain-days', '0'])).toThrow('--retain-days must be at least 1 day');
  });
});
