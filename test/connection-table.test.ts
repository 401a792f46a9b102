import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DataDirSpace } from '../src/db/data-dir-space.js';
import type { Db } from '../src/db/open.js';
import { connectionsTable, exportsTable, exportVersionsTable, type ConnectionRow } from '../src/db/schema.js';
import { EventLog } from '../src/events/event-log.js';
import { createLogger } from '../src/log.js';
import { ConnectionStore } from '../src/supervisor/connection-store.js';
import { ConnectionTable } from '../src/supervisor/connections.js';
import { readStartTicks } from '../src/supervisor/proc.js';
import { sendRate } from '../src/supervisor/sampler.js';
import { tempDir } from '../testkit/daemon.js';
import { memoryDatabase } from './helpers/db.js';

// The table and its store over a real database in memory, with real processes (`sleep`) standing
// in for nbd-server: what is checked here is the bookkeeping, which needs no NBD client.
let db: Db;
let cowDir: string;
let events: EventLog;
let table: ConnectionTable;
const started: ChildProcess[] = [];

beforeEach(() => {
  db = memoryDatabase();
  cowDir = tempDir();
  const space = new DataDirSpace(cowDir, createLogger('error'));
  events = new EventLog(db, space);
  table = new ConnectionTable(new ConnectionStore(db, space), events, cowDir);
});

afterEach(() => {
  for (const child of started.splice(0)) child.kill('SIGKILL');
  db.$client.close();
  fs.rmSync(cowDir, { recursive: true, force: true });
});

function addExport(name: string): number {
  const createdAt = new Date().toISOString();
  const exportId = db.insert(exportsTable).values({ name, readonly: true, createdAt }).returning().all()[0]!.id;
  addVersion(exportId, 1);
  return exportId;
}

function addVersion(exportId: number, version: number): number {
  const values = {
    exportId,
    version,
    file: `/srv/images/${exportId}-${version}.img`,
    size: 512,
    state: 'ready' as const,
    createdAt: new Date().toISOString(),
  };
  const versionId = db.insert(exportVersionsTable).values(values).returning().all()[0]!.id;
  db.update(exportsTable).set({ currentVersionId: versionId }).where(eq(exportsTable.id, exportId)).run();
  return versionId;
}

function rowOf(id: number): ConnectionRow {
  return db.select().from(connectionsTable).where(eq(connectionsTable.id, id)).get()!;
}

function recorded(): Array<[type: string, exportName: string | null, details: unknown]> {
  return events.since(0, 100).map((event) => [event.type, event.exportName, event.details]);
}

/** A process that runs until killed, as a serving nbd-server does. */
async function serving(): Promise<ChildProcess> {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  started.push(child);
  await once(child, 'spawn');
  return child;
}

function servedConnection(exportId: number, child: ChildProcess) {
  const conn = table.open('127.0.0.2', 40010);
  table.attachProcess(conn, child.pid!);
  table.negotiated(conn, { exportId, versionId: null });
  return conn;
}

async function endOf(child: ChildProcess): Promise<NodeJS.Signals | number | null> {
  if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
  return child.signalCode ?? child.exitCode;
}

describe('ConnectionTable', () => {
  it('records the version each connection attached, and counts live connections per version', () => {
    const alpha = addExport('alpha');
    const beta = addExport('beta');
    const [alpha2, alpha3] = [addVersion(alpha, 2), addVersion(alpha, 3)];
    const onTwo = table.open('127.0.0.2', 40001);
    table.negotiated(onTwo, { exportId: alpha, versionId: alpha2 });
    const onThree = table.open('127.0.0.2', 40002);
    table.negotiated(onThree, { exportId: alpha, versionId: alpha3 });
    // A version of another export is no version of this one: the connection counts for its export only.
    const misreported = table.open('127.0.0.2', 40003);
    const betaVersion = db.select().from(exportsTable).where(eq(exportsTable.id, beta)).get()!.currentVersionId!;
    table.negotiated(misreported, { exportId: alpha, versionId: betaVersion });
    expect([rowOf(onTwo.id).versionId, rowOf(onThree.id).versionId, rowOf(misreported.id).versionId]).toEqual([alpha2, alpha3, null]);
    expect(table.countByVersion()).toEqual(
      new Map([
        [alpha2, 1],
        [alpha3, 1],
      ]),
    );
    expect(table.countByExport()).toEqual(new Map([[alpha, 3]]));
  });

  it('records each step of a connection in its row and as an event', () => {
    const alpha = addExport('alpha');
    const conn = table.open('127.0.0.2', 40001);
    expect(rowOf(conn.id)).toMatchObject({ clientAddress: '127.0.0.2', clientPort: 40001, exportId: null, closedAt: null });
    expect([table.size, table.pendingFrom('127.0.0.2'), table.pendingFrom('127.0.0.3')]).toEqual([1, 1, 0]);

    table.negotiated(conn, { exportId: alpha + 100, versionId: null }); // an id no export ever had: not trusted
    expect(conn.exportId).toBeNull();
    table.negotiated(conn, { exportId: alpha, versionId: null });
    expect(rowOf(conn.id)).toMatchObject({ exportId: alpha, negotiatedAt: conn.negotiatedAt });
    expect(table.countByExport()).toEqual(new Map([[alpha, 1]]));
    expect(table.pendingFrom('127.0.0.2')).toBe(0);

    conn.bytesSent = 4096; // as the sampler leaves it: the row catches up at close
    expect(table.recent(10, true)).toMatchObject([{ id: conn.id, exportName: 'alpha', live: true, bytesSent: 4096 }]);
    expect(rowOf(conn.id).bytesSent).toBe(0);

    table.close(conn, { outcome: 'closed', exitCode: 0, signal: null, error: null });
    table.close(conn, { outcome: 'failed', error: 'a second close changes nothing' });
    expect(rowOf(conn.id)).toMatchObject({ outcome: 'closed', exitCode: 0, signal: null, error: null, bytesSent: 4096 });
    expect(rowOf(conn.id).closedAt).not.toBeNull();
    expect(table.size).toBe(0);
    expect(table.recent(10, true)).toEqual([]);
    const [view] = table.recent(10, false);
    expect(view).toMatchObject({ id: conn.id, exportName: 'alpha', live: false, bytesSent: 4096, bytesPerSecond: 0 });
    expect(view).not.toHaveProperty('pidStartTicks');
    expect(recorded()).toEqual([
      ['connection.opened', null, { connection: conn.id, client: '127.0.0.2', port: 40001 }],
      ['connection.negotiated', 'alpha', { connection: conn.id, client: '127.0.0.2' }],
      ['connection.closed', 'alpha', { connection: conn.id, client: '127.0.0.2', outcome: 'closed', bytesSent: 4096, exitCode: 0 }],
    ]);
  });

  it('pins a process by pid and start time', async () => {
    const child = await serving();
    const conn = table.open('127.0.0.2', 40002);
    table.attachProcess(conn, child.pid!);
    expect(rowOf(conn.id)).toMatchObject({ pid: child.pid, pidStartTicks: readStartTicks(child.pid!) });
    expect(rowOf(conn.id).pidStartTicks).toBeGreaterThan(0);
  });

  it('kills the processes of the given exports only, removing their diffs and keeping their size', async () => {
    const [alpha, beta] = [addExport('alpha'), addExport('beta')];
    const [alphaProcess, betaProcess] = [await serving(), await serving()];
    const [alphaConn, betaConn] = [servedConnection(alpha, alphaProcess), servedConnection(beta, betaProcess)];
    const alphaDiff = path.join(cowDir, `alpha.img-127.0.0.2-${alphaProcess.pid}.diff`);
    const betaDiff = path.join(cowDir, `beta.img-127.0.0.2-${betaProcess.pid}.diff`);
    fs.writeFileSync(alphaDiff, Buffer.alloc(3000));
    fs.writeFileSync(betaDiff, Buffer.alloc(10));

    expect(table.kill(new Set([alpha]))).toBe(1);
    expect(await endOf(alphaProcess)).toBe('SIGKILL');
    expect([alphaConn.killRequested, betaConn.killRequested]).toEqual([true, false]);
    expect([fs.existsSync(alphaDiff), fs.existsSync(betaDiff)]).toEqual([false, true]);
    expect(betaProcess.exitCode ?? betaProcess.signalCode).toBeNull();
    table.close(alphaConn, { outcome: 'killed', signal: 'SIGKILL' });
    expect(rowOf(alphaConn.id)).toMatchObject({ outcome: 'killed', signal: 'SIGKILL', cowDiffBytes: 3000 });
  });

  it('adopts what an earlier run left serving, and closes or cuts the rest', async () => {
    const alpha = addExport('alpha');
    const [survivor, unchosen] = [await serving(), await serving()];
    const ended = spawn('true');
    await endOf(ended);
    const openedAt = new Date().toISOString();
    const insert = (values: Partial<ConnectionRow>) =>
      db
        .insert(connectionsTable)
        .values({ clientAddress: '127.0.0.2', clientPort: 40020, openedAt, ...values })
        .returning()
        .all()[0]!.id;
    const survivorRow = insert({
      pid: survivor.pid,
      pidStartTicks: readStartTicks(survivor.pid!),
      exportId: alpha,
      negotiatedAt: openedAt,
    });
    const unchosenRow = insert({ pid: unchosen.pid, pidStartTicks: readStartTicks(unchosen.pid!) });
    const endedRow = insert({ pid: ended.pid, pidStartTicks: 1, exportId: alpha, negotiatedAt: openedAt });
    // The pid of a running process, but not the one that started then: the start time tells them apart.
    const reusedRow = insert({ pid: process.pid, pidStartTicks: readStartTicks(process.pid)! + 1 });

    expect(table.adoptSurvivors()).toEqual({ adopted: 1, ended: 2, cut: 1 });
    expect(await endOf(unchosen)).toBe('SIGKILL');
    expect(table.list().map((conn) => [conn.id, conn.adopted])).toEqual([[survivorRow, true]]);
    expect(rowOf(survivorRow).closedAt).toBeNull();
    expect(rowOf(unchosenRow)).toMatchObject({
      outcome: 'not-served',
      error: 'had chosen no export when nbdmux restarted: cut, since no daemon can learn which export it serves',
    });
    expect(rowOf(endedRow)).toMatchObject({ outcome: 'closed', error: 'ended while nbdmux was not running' });
    expect(rowOf(reusedRow)).toMatchObject({ outcome: 'not-served', error: 'ended while nbdmux was not running' });
    expect(recorded().filter(([type]) => type === 'connection.adopted')).toEqual([
      ['connection.adopted', 'alpha', { connection: survivorRow, pid: survivor.pid }],
    ]);

    // Not our child: no 'close' comes, /proc shows the end at the next refresh.
    expect(table.kill(new Set([alpha]))).toBe(1);
    expect(await endOf(survivor)).toBe('SIGKILL');
    table.refresh();
    expect(table.size).toBe(0);
    expect(rowOf(survivorRow)).toMatchObject({ outcome: 'killed' });
  });
});

describe('sendRate', () => {
  it.each([
    ['bytes over the interval, per second', [0, 1000, 5000, 2000], 5000],
    ['rounded to whole bytes', [0, 0, 1, 3], 333],
    ['never negative (a counter read from another process)', [1000, 0, 500, 10], 0],
    ['a zero interval counts as one millisecond', [0, 5, 100, 5], 100_000],
  ] as const)('%s', (_why, [bytesBefore, sampledAt, bytesNow, now], rate) => {
    expect(sendRate(bytesBefore, sampledAt, bytesNow, now)).toBe(rate);
  });
});
