import { describe, expect, it } from 'vitest';
import { DataDirSpace } from '../src/db/data-dir-space.js';
import { EventLog } from '../src/events/event-log.js';
import type { EventDetails, EventType } from '../src/model/event-map.js';
import { createLogger } from '../src/log.js';
import { EventLines, typeWidth } from '../src/operator-cli/event-lines.js';
import { memoryDatabase } from './helpers/db.js';

function eventLog(): EventLog {
  // The data dir is only asked about when a write fails for space; nothing here fills one.
  return new EventLog(memoryDatabase(), new DataDirSpace('/nonexistent', createLogger('error')));
}

describe('the event map types the event log', () => {
  it('reads each event back with the details of its type', () => {
    const log = eventLog();
    const created = {
      id: 1,
      file: '/srv/a.img',
      readonly: true,
      cow: false,
      allow: ['10.0.0.0/8'],
      size: 4096,
      actor: 'bearer',
      client: '127.0.0.2',
    } as const;
    log.record('export.created', 'a', { ...created, allow: [...created.allow] });
    log.record('connection.refused', null, { client: '127.0.0.3', port: 4000, reason: 'not allowed', count: 1 });
    const [refused, exported] = log.recent(10);
    expect(exported).toMatchObject({ type: 'export.created', exportName: 'a', details: created });
    expect(refused).toMatchObject({ type: 'connection.refused', exportName: null, details: { client: '127.0.0.3', count: 1 } });
    // Narrowed by its type, an event's details need no casts.
    if (refused?.type !== 'connection.refused') throw new Error(`expected connection.refused, got ${refused?.type}`);
    expect(refused.details.reason.toUpperCase()).toBe('NOT ALLOWED');
  });

  it('has no other guard than the types: the column takes any text, so a misspelt type must not compile', () => {
    const log = eventLog();
    // @ts-expect-error: there is no event type 'export.craeted' (`tsc --noEmit` fails if this compiles)
    log.record('export.craeted', 'a', { id: 1 });
    // @ts-expect-error: connection.opened carries no reason
    log.record('connection.opened', null, { connection: 1, client: '127.0.0.1', port: 1, reason: 'x' });
    expect(log.recent(2).map((e) => e.type)).toEqual(['connection.opened', 'export.craeted']);
  });
});

describe('the CLI shows every event type', () => {
  // One of each type: a type added to the map and not here is a compile error.
  const samples: { [T in EventType]: EventDetails[T] } = {
    'daemon.started': { http: 4040, nbd: 10809, pid: 7 },
    'daemon.stopped': { pid: 7 },
    'daemon.space-recovered': { dataDir: '/var/lib/nbdmux', fullSince: '2026-01-02T03:04:05.000Z', notRecorded: 3 },
    'export.created': {
      id: 1,
      file: '/srv/a.img',
      readonly: true,
      cow: false,
      allow: [],
      size: 4096,
      actor: 'session:abcdEF12',
      client: '10.0.0.9',
    },
    'export.version-switched': { id: 1, version: 2, file: '/srv/b.img', reason: 'update', actor: 'bearer', client: '10.0.0.9' },
    'import.started': { id: 1, version: 3, url: 'https://example.org/a.img.xz', actor: 'open', client: '10.0.0.9' },
    'import.done': { id: 1, version: 3, file: '/var/lib/nbdmux/images/a-v3-0123456789ab.img', size: 4096, sha256: 'ab'.repeat(32) },
    'import.failed': { id: 1, version: 3, reason: 'http-status', error: 'GET https://example.org/a.img.xz answered 404 Not Found' },
    'import.cancelled': { id: 1, version: 3 },
    'export.removed': { id: 1, force: true, liveConnections: 2, actor: 'open', client: '10.0.0.9' },
    'export.file-changed': { id: 1, file: '/srv/a.img', pathLeadsTo: 'another file', serving: 'the registered file' },
    'connection.opened': { connection: 5, client: '10.1.0.5', port: 51000 },
    'connection.negotiated': { connection: 5, client: '10.1.0.5' },
    'connection.closed': { connection: 5, client: '10.1.0.5', outcome: 'failed', bytesSent: 512, exitCode: 1, error: 'nbd-server exited' },
    'connection.refused': { client: '*', reason: 'too many kinds', count: 40, since: '2026-01-02T03:04:05.000Z' },
    'connection.adopted': { connection: 5, pid: null },
    'nbd-server.failed': { connection: 5, client: '10.1.0.5', reason: 'cannot start', count: 1 },
    'nbd-server.recovered': { failingSince: '2026-01-02T03:04:05.000Z', failedStarts: 12, lastReason: 'cannot start' },
    'auth.login-succeeded': { client: '10.0.0.9', actor: 'session:abcdEF12' },
    'auth.login-failed': { client: '10.0.0.9', via: 'bearer' },
    'auth.logout': { client: '10.0.0.9' },
    'boot.script': { client: '10.1.0.5', status: 200, nbd: '10.0.0.1:10809' },
    'boot.kernel': { client: '10.1.0.5', status: 304, bytes: 8_000_000 },
    'boot.initrd': { client: '10.1.0.5', status: 200, bytes: 7_600_000 },
    'machine.created': { mac: '52:54:00:12:34:56', name: 'node7', persistent: true, actor: 'open', client: '10.0.0.9' },
    'machine.updated': {
      mac: '52:54:00:12:34:56',
      name: 'node7',
      changed: ['export'],
      stateDiscarded: true,
      actor: 'open',
      client: '10.0.0.9',
    },
    'machine.deleted': { mac: '52:54:00:12:34:56', name: 'node7', actor: 'bearer', client: '10.0.0.9' },
    'machine.reset': { mac: '52:54:00:12:34:56', name: 'node7', actor: 'bearer', client: '10.0.0.9' },
    'machine.discovered': { mac: '52:54:00:ab:cd:ef', client: '10.1.0.6' },
    'machine.stage': {
      mac: '52:54:00:12:34:56',
      name: 'node7',
      stage: 'root',
      client: '10.1.0.5',
      detail: 'ramboot: [1.20] starting\nramboot: [3.40] root mounted',
    },
    'profile.created': { name: 'rack3', actor: 'open', client: '10.0.0.9' },
    'profile.updated': {
      name: 'rack3',
      changed: ['export'],
      machines: 2,
      cleared: ['export'],
      stateDiscarded: ['node1'],
      actor: 'open',
      client: '10.0.0.9',
    },
    'profile.removed': { name: 'rack3', actor: 'bearer', client: '10.0.0.9' },
    'profile.adopted': { name: 'rack3', machines: [{ mac: '52:54:00:ab:cd:ef', name: 'rack3-node01' }], actor: 'open', client: '10.0.0.9' },
    'machine.bmc-set': {
      mac: '52:54:00:12:34:56',
      name: 'node7',
      address: '10.0.3.7',
      port: 623,
      user: 'admin',
      passwordChanged: true,
      actor: 'open',
      client: '10.0.0.9',
    },
    'machine.bmc-removed': { mac: '52:54:00:12:34:56', name: 'node7', actor: 'bearer', client: '10.0.0.9' },
    'profile.bmc-set': { name: 'rack3', user: 'admin', passwordChanged: true, actor: 'open', client: '10.0.0.9' },
    'profile.bmc-removed': { name: 'rack3', actor: 'bearer', client: '10.0.0.9' },
    'machine.power': {
      mac: '52:54:00:12:34:56',
      name: 'node7',
      action: 'off',
      outcome: 'credentials',
      error: 'RAKP 2 HMAC is invalid',
      actor: 'bearer',
      client: '10.0.0.9',
    },
  };
  /** What watch shows after the time, type and export columns; null: the next line of that connection says it. */
  const expected: Record<EventType, string | null> = {
    'daemon.started': 'http=4040 nbd=10809 pid=7',
    'daemon.stopped': 'pid=7',
    'daemon.space-recovered': 'dataDir=/var/lib/nbdmux fullSince=2026-01-02T03:04:05.000Z notRecorded=3',
    'export.created': '/srv/a.img, 4.0 KiB, read-only (by session:abcdEF12 from 10.0.0.9)',
    'export.version-switched': 'version 2 serves new clients (update): /srv/b.img (by bearer from 10.0.0.9)',
    'import.started': 'version 3 from https://example.org/a.img.xz (by open from 10.0.0.9)',
    'import.done': `version 3: 4.0 KiB, sha256 ${'ab'.repeat(32)}`,
    'import.failed': 'version 3 failed (http-status): GET https://example.org/a.img.xz answered 404 Not Found',
    'import.cancelled': 'version 3 cancelled',
    'export.removed': 'removed with --force, 2 live connection(s) cut (by open from 10.0.0.9)',
    'export.file-changed': '/srv/a.img now leads to another file; serving the registered file',
    'connection.opened': null,
    'connection.negotiated': '#5 10.1.0.5 attached',
    'connection.closed': '#5 10.1.0.5 failed, sent 512 B, exit code 1: nbd-server exited',
    'connection.refused': '* refused: too many kinds (40 more since 03:04:05)',
    'connection.adopted': '#5 adopted from the previous daemon (nbd-server pid unknown)',
    'nbd-server.failed': '#5 10.1.0.5: cannot start',
    'nbd-server.recovered': 'serves again after 12 failed start(s) in 0s; the last: cannot start',
    'auth.login-succeeded': 'client=10.0.0.9 actor=session:abcdEF12',
    'auth.login-failed': 'client=10.0.0.9 via=bearer',
    'auth.logout': 'client=10.0.0.9',
    'boot.script': '10.1.0.5 HTTP 200, NBD at 10.0.0.1:10809',
    'boot.kernel': '10.1.0.5 HTTP 304, 7.6 MiB',
    'boot.initrd': '10.1.0.5 HTTP 200, 7.2 MiB',
    'machine.created': 'mac=52:54:00:12:34:56 name=node7 persistent=true actor=open client=10.0.0.9',
    'machine.updated': 'mac=52:54:00:12:34:56 name=node7 changed=["export"] stateDiscarded=true actor=open client=10.0.0.9',
    'machine.deleted': 'mac=52:54:00:12:34:56 name=node7 actor=bearer client=10.0.0.9',
    'machine.reset': 'mac=52:54:00:12:34:56 name=node7 actor=bearer client=10.0.0.9',
    'machine.discovered': 'mac=52:54:00:ab:cd:ef client=10.1.0.6',
    'machine.stage': 'node7 (52:54:00:12:34:56) root from 10.1.0.5: ramboot: [3.40] root mounted',
    'profile.created': 'name=rack3 actor=open client=10.0.0.9',
    'profile.updated':
      "rack3: export changed for 2 machine(s) at their next boot; its machines' own export cleared; state discarded: node1 (by open from 10.0.0.9)",
    'profile.removed': 'name=rack3 actor=bearer client=10.0.0.9',
    'profile.adopted': 'rack3 adopted rack3-node01 (52:54:00:ab:cd:ef) (by open from 10.0.0.9)',
    'machine.bmc-set':
      'mac=52:54:00:12:34:56 name=node7 address=10.0.3.7 port=623 user=admin passwordChanged=true actor=open client=10.0.0.9',
    'machine.bmc-removed': 'mac=52:54:00:12:34:56 name=node7 actor=bearer client=10.0.0.9',
    'profile.bmc-set': 'name=rack3 user=admin passwordChanged=true actor=open client=10.0.0.9',
    'profile.bmc-removed': 'name=rack3 actor=bearer client=10.0.0.9',
    'machine.power': 'node7 (52:54:00:12:34:56) off: credentials: RAKP 2 HMAC is invalid (by bearer from 10.0.0.9)',
  };
  const at = new Date(2026, 0, 2, 3, 4, 5).toISOString();

  for (const type of Object.keys(samples) as EventType[]) {
    it(type, () => {
      const event = { id: 1, at, type, exportName: type.startsWith('export.') ? 'a' : null, details: samples[type] } as Parameters<
        EventLines['render']
      >[0];
      const line = expected[type];
      expect(type.length, 'the event column fits it').toBeLessThanOrEqual(typeWidth);
      expect(new EventLines().render(event)).toBe(
        line === null ? null : `03:04:05  ${type.padEnd(23)}  ${(event.exportName ?? '-').padEnd(14)}  ${line}`,
      );
    });
  }

  it('replay.skipped, which only the stream sends', () => {
    const skipped = {
      id: 9,
      at,
      type: 'replay.skipped',
      exportName: null,
      details: { skipped: 2500, afterId: 3, reason: 'too-far-behind' },
    } as const;
    expect(new EventLines().render(skipped)).toBe(
      `03:04:05  ${'replay.skipped'.padEnd(23)}  ${'-'.padEnd(14)}  2500 events missed, too many to replay: events.list (or the dashboard) has them`,
    );
  });

  it('replay.skipped over events retention pruned', () => {
    const pruned = { id: 9, at, type: 'replay.skipped', exportName: null, details: { skipped: 6, afterId: 3, reason: 'pruned' } } as const;
    expect(new EventLines().render(pruned)).toBe(
      `03:04:05  ${'replay.skipped'.padEnd(23)}  ${'-'.padEnd(14)}  6 events missed are gone: older than --retain-days, they were pruned`,
    );
  });

  it('a connection as two aligned lines, attached and closed, the closed one with how long it lasted and its whole error', () => {
    const lines = new EventLines();
    const event = (id: number, seconds: number, type: string, details: object) =>
      ({ id, at: new Date(2026, 0, 2, 3, 4, seconds).toISOString(), type, exportName: 'debian-12-generic', details }) as Parameters<
        EventLines['render']
      >[0];
    const error = 'nbd-server exited with a message long enough to pass any terminal width: '.repeat(3) + 'the end';
    const rendered = [
      lines.render(event(1, 5, 'connection.opened', { connection: 7, client: '10.1.0.5', port: 51000 })),
      lines.render(event(2, 6, 'connection.negotiated', { connection: 7, client: '10.1.0.5' })),
      lines.render(
        event(3, 59, 'connection.closed', {
          connection: 7,
          client: '10.1.0.5',
          outcome: 'failed',
          bytesSent: 134226072,
          exitCode: 1,
          error,
        }),
      ),
    ];
    expect(rendered).toEqual([
      null,
      '03:04:06  connection.negotiated    debian-12-generic  #7 10.1.0.5 attached',
      `03:04:59  connection.closed        debian-12-generic  #7 10.1.0.5 failed after 54s, sent 128.0 MiB, exit code 1: ${error}`,
    ]);
  });
});
