import fs from 'node:fs';
import path from 'node:path';
import { is } from 'drizzle-orm';
import { getTableConfig, SQLiteTable } from 'drizzle-orm/sqlite-core';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/open.js';
import * as schema from '../src/db/schema.js';
import { memoryDatabase, migrationsFolder } from './helpers/db.js';
import { tempDir } from '../testkit/daemon.js';

interface Journal {
  entries: Array<{ idx: number; tag: string }>;
}

const journal = JSON.parse(fs.readFileSync(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as Journal;

/** The migrations folder as it stood when only the first `count` migrations existed. */
function migrationsUpTo(count: number): string {
  const folder = tempDir('nbdmux-migrations-');
  fs.cpSync(migrationsFolder, folder, { recursive: true });
  const kept = { ...journal, entries: journal.entries.slice(0, count) };
  fs.writeFileSync(path.join(folder, 'meta', '_journal.json'), JSON.stringify(kept));
  return folder;
}

const tables = (Object.values(schema) as unknown[]).filter((value): value is SQLiteTable => is(value, SQLiteTable));

describe('migrations', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('create every table and column the drizzle schema declares, so no schema change ships without its migration', () => {
    const db = memoryDatabase();
    expect(tables.map((table) => getTableConfig(table).name).sort()).toEqual(expect.arrayContaining(['connections', 'events', 'exports']));
    for (const table of tables) {
      const { name, columns } = getTableConfig(table);
      const actual = db.$client.pragma(`table_info(${name})`) as Array<{ name: string; notnull: number }>;
      expect(actual.map((column) => column.name).sort(), `columns of ${name}`).toEqual(columns.map((column) => column.name).sort());
      for (const column of columns) {
        expect(actual.find((c) => c.name === column.name)!.notnull === 1, `${name}.${column.name} NOT NULL`).toBe(column.notNull);
      }
    }
    db.$client.close();
  });

  it('keep every field of a machine made before profiles as its own (0009), in no profile', () => {
    const folder = migrationsUpTo(journal.entries.findIndex((entry) => entry.tag.startsWith('0009')));
    const dir = tempDir('nbdmux-db-');
    dirs.push(folder, dir);
    const file = path.join(dir, 'nbdmux.db');
    const old = openDatabase(file, folder);
    old.$client
      .prepare(
        "INSERT INTO machines (mac, name, export_id, cmdline, persistent, state_size, machine_id, created_at) VALUES ('52:54:00:00:00:01', 'old', NULL, 'quiet', 1, 134217728, 'x', 'then')",
      )
      .run();
    old.$client.close();
    const db = openDatabase(file, migrationsFolder);
    expect(db.$client.prepare('SELECT name, profile_id, export_id, cmdline, persistent, state_size FROM machines').all()).toEqual([
      { name: 'old', profile_id: null, export_id: null, cmdline: 'quiet', persistent: 1, state_size: 134217728 },
    ]);
    db.$client.close();
  });

  it('upgrade a database made by the first migration, with rows in it, to the newest without losing a row', () => {
    const dir = tempDir('nbdmux-upgrade-');
    dirs.push(dir);
    const file = path.join(dir, 'state.db');
    const first = migrationsUpTo(1);
    dirs.push(first);

    const old = openDatabase(file, first);
    old.$client.exec(`
      INSERT INTO exports (name, file, readonly, size, created_at, removed_at) VALUES
        ('debian', '/srv/images/debian.img', 1, 21474836480, '2026-11-01T08:00:00.000Z', NULL),
        ('scratch', '/srv/images/scratch.img', 0, 1048576, '2026-11-01T08:01:00.000Z', '2026-11-02T09:00:00.000Z');
      INSERT INTO connections (export_id, client_address, client_port, pid, pid_start_ticks, opened_at, negotiated_at, closed_at, outcome, exit_code, signal, bytes_sent, error)
        VALUES (1, '10.1.0.7', 40001, 4242, 99, '2026-11-01T08:02:00.000Z', '2026-11-01T08:02:01.000Z', '2026-11-01T09:00:00.000Z', 'closed', 0, NULL, 123456789, NULL);
      INSERT INTO events (at, type, export_name, details) VALUES ('2026-11-01T08:00:00.000Z', 'export.created', 'debian', '{"id":1}');
    `);
    old.$client.close();

    const upgraded = openDatabase(file, migrationsFolder);
    expect(upgraded.select().from(schema.exportsTable).all()).toMatchObject([
      { id: 1, name: 'debian', currentVersionId: 1, readonly: true, removedAt: null, cow: false, allow: [] },
      { id: 2, name: 'scratch', currentVersionId: 2, readonly: false, removedAt: '2026-11-02T09:00:00.000Z', cow: false, allow: [] },
    ]);
    // Each export registered before versions is its own version 1, its file and size moved there.
    expect(upgraded.select().from(schema.exportVersionsTable).all()).toMatchObject([
      {
        id: 1,
        exportId: 1,
        version: 1,
        file: '/srv/images/debian.img',
        size: 21474836480,
        stored: false,
        state: 'ready',
        createdAt: '2026-11-01T08:00:00.000Z',
      },
      { id: 2, exportId: 2, version: 1, file: '/srv/images/scratch.img', size: 1048576, stored: false, state: 'ready' },
    ]);
    expect(upgraded.select().from(schema.connectionsTable).all()).toMatchObject([
      {
        id: 1,
        exportId: 1,
        versionId: 1,
        clientAddress: '10.1.0.7',
        clientPort: 40001,
        pid: 4242,
        bytesSent: 123456789,
        outcome: 'closed',
        cowDiffBytes: null,
      },
    ]);
    expect(upgraded.select().from(schema.eventsTable).all()).toMatchObject([
      { id: 1, type: 'export.created', exportName: 'debian', details: { id: 1 } },
    ]);
    const applied = upgraded.$client.prepare('SELECT count(*) AS n FROM __drizzle_migrations').get() as { n: number };
    expect(applied.n).toBe(journal.entries.length);
    upgraded.$client.close();

    // Opening again applies nothing and changes nothing.
    const again = openDatabase(file, migrationsFolder);
    expect(again.select().from(schema.exportsTable).all()).toHaveLength(2);
    expect((again.$client.prepare('SELECT count(*) AS n FROM __drizzle_migrations').get() as { n: number }).n).toBe(journal.entries.length);
    again.$client.close();
  });
});
