import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor } from '../testkit/daemon.js';
import { makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

const passThrough = `#!/bin/sh\nexec nbd-server "$@"\n`;
/** As in health.test.ts: the real nbd-server behind a wrapper the test breaks, the only way to make every start fail while the daemon runs. */
const failingToServe = `#!/bin/sh\n[ "$1" = -V ] && exec nbd-server -V\necho "Error: simulated start-up failure" >&2\nexit 1\n`;
const failedStarts = 30;

describe('an nbd-server that fails for every client', () => {
  const dataDirs: string[] = [];
  afterAll(() => killEverything(dataDirs));

  it('is counted, not recorded per connection, and its recovery is an event', async () => {
    const dir = tempDir('nbdmux-bin-');
    const bin = path.join(dir, 'nbd-server');
    fs.writeFileSync(bin, passThrough, { mode: 0o755 });
    const daemon = await startDaemon({ args: ['--nbd-server-bin', bin] });
    dataDirs.push(daemon.dataDir);
    const client = trpcClient(daemon.url);
    const image = makeImage(dir, 'disk.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image })).status).toBe(201);
    const before = (await client.events.list.query({ limit: 1 }))[0]!.id;
    const eventsSince = async () => (await client.events.list.query({ afterId: before, limit: 500 })).reverse();

    fs.writeFileSync(bin, failingToServe);
    // Well within one 10 s interval: 6 rounds of 5 clients at once.
    for (let round = 0; round < failedStarts / 5; round++) {
      const results = await Promise.all(Array.from({ length: 5 }, () => run('nbdinfo', [daemon.nbdUri('disk')])));
      expect(results.every((result) => result.code !== 0)).toBe(true);
    }
    await waitFor('every failed connection to be recorded', async () => {
      const failed = (await client.connections.list.query({ limit: 100 })).filter((conn) => conn.outcome === 'failed');
      return failed.length === failedStarts ? failed : undefined;
    });
    const sick = await api(daemon, 'GET', '/healthz');
    expect(sick.status).toBe(503);
    expect(sick.text).toContain('simulated start-up failure');

    const whileFailing = await eventsSince();
    const failures = whileFailing.filter((event) => event.type === 'nbd-server.failed');
    expect(failures, 'one event for the first failure, the rest counted').toHaveLength(1);
    expect(failures[0]!.details).toMatchObject({
      reason: expect.stringMatching(/simulated start-up failure/),
      count: 1,
      client: '127.0.0.1',
    });
    const closedFailed = whileFailing.filter((event) => event.type === 'connection.closed' && event.details.outcome === 'failed');
    expect(closedFailed, "only the first failed connection's end is an event of its own").toHaveLength(1);
    expect(daemon.output().match(/"nbd-server failed/g), 'logged once per reason and interval').toHaveLength(1);

    fs.writeFileSync(bin, passThrough);
    await waitFor('health to clear', async () => ((await api(daemon, 'GET', '/healthz')).status === 200 ? true : undefined));
    const afterRecovery = await eventsSince();
    const recovered = afterRecovery.find((event) => event.type === 'nbd-server.recovered');
    expect(recovered?.details).toMatchObject({ failedStarts, lastReason: expect.stringMatching(/simulated start-up failure/) });
    // The counts recorded before the recovery add up to every failed start.
    const counted = afterRecovery.filter((event) => event.type === 'nbd-server.failed' && event.id < recovered!.id);
    expect(counted.reduce((sum, event) => sum + ((event.details as { count?: number }).count ?? 0), 0)).toBe(failedStarts);
    expect(counted.at(-1)!.details).toMatchObject({ count: failedStarts - 1, since: expect.any(String) });
    expect(sha256(await readExport(daemon.nbdUri('disk')))).toBe(sha256(image));
    expect(daemon.child.exitCode).toBeNull();
  }, 60_000);
});
