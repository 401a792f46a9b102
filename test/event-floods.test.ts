import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';

/** A module as the daemon runs it, built: openDatabase finds the migrations relative to dist/. */
const built = <T>(module: string) => import(new URL(`../dist/src/${module}`, import.meta.url).href) as Promise<T>;

const walBytes = (dataDir: string) => fs.statSync(path.join(dataDir, 'state.db-wal'), { throwIfNoEntry: false })?.size ?? 0;

/** Connects from `localAddress` and waits until the daemon closes the socket. */
function connectAndBeClosed(port: number, localAddress: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    socket.on('error', () => {});
    socket.on('close', () => resolve());
  });
}

interface RefusedRow {
  details: { client: string; port?: number; reason: string; count: number; since?: string };
}

function refusals(dataDir: string): RefusedRow[] {
  const db = new Database(path.join(dataDir, 'state.db'), { readonly: true });
  try {
    const rows = db.prepare("SELECT details FROM events WHERE type = 'connection.refused' ORDER BY id").all() as Array<{ details: string }>;
    return rows.map((row) => ({ details: JSON.parse(row.details) as RefusedRow['details'] }));
  } finally {
    db.close();
  }
}

describe('a refused client flooding the NBD port', () => {
  let daemon: RunningDaemon;
  afterAll(() => killEverything(daemon ? [daemon.dataDir] : []));

  it('costs a few counted events, not a row per attempt, and the WAL stays small', async () => {
    daemon = await startDaemon({ args: ['--nbd-allow', '127.0.0.1/32'] });
    const attempts = 2000;
    const started = Date.now();
    for (let sent = 0; sent < attempts; sent += 50) {
      await Promise.all(Array.from({ length: 50 }, () => connectAndBeClosed(daemon.nbdPort, '127.0.0.2')));
      expect(Date.now() - started, 'the flood is bounded in time').toBeLessThan(30_000);
    }
    console.log(`${attempts} refused connects from 127.0.0.2 in ${Date.now() - started} ms`);

    // The first is recorded at once; the rest come as one count when the 10 s interval ends.
    const rows = await waitFor(
      'the count of the repeats',
      () => {
        const now = refusals(daemon.dataDir);
        return now.reduce((sum, row) => sum + row.details.count, 0) === attempts ? now : undefined;
      },
      20_000,
    );
    console.log('refusal events:', JSON.stringify(rows.map((row) => row.details)));
    expect(rows.length).toBeLessThanOrEqual(4);
    expect(rows[0]!.details).toMatchObject({ client: '127.0.0.2', reason: '127.0.0.2 is not in --nbd-allow', count: 1 });
    expect(rows.every((row) => row.details.client === '127.0.0.2')).toBe(true);
    console.log(`WAL after the flood: ${walBytes(daemon.dataDir)} bytes`);
    expect(walBytes(daemon.dataDir)).toBeLessThan(1024 * 1024);
    expect(await daemon.stop()).toBe(0);
  }, 60_000);
});

describe('the WAL under a stream of events', () => {
  it('is checkpointed as it goes: 5000 events leave it under 2 MiB', async () => {
    const { openDatabase } = await built<typeof import('../src/db/open.js')>('db/open.js');
    const { DataDirSpace } = await built<typeof import('../src/db/data-dir-space.js')>('db/data-dir-space.js');
    const { EventLog } = await built<typeof import('../src/events/event-log.js')>('events/event-log.js');
    const { createLogger } = await built<typeof import('../src/log.js')>('log.js');
    const dataDir = tempDir();
    const db = openDatabase(path.join(dataDir, 'state.db'));
    const events = new EventLog(db, new DataDirSpace(dataDir, createLogger('error')));
    for (let i = 0; i < 5000; i++) events.record('connection.opened', null, { connection: i, client: '127.0.0.2', port: 40000 + i });
    console.log(`WAL after 5000 events: ${walBytes(dataDir)} bytes`);
    expect(walBytes(dataDir)).toBeLessThan(2 * 1024 * 1024);
    expect(events.recent(1)[0]!.details).toMatchObject({ connection: 4999 });
    db.$client.close();
  });
});
