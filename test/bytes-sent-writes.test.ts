import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { nbdsh, startNbdshSession } from '../testkit/nbd.js';
import { trpcClient } from './helpers/trpc.js';

/**
 * Bytes sent are what the clients received, whatever else the serving process wrote: a client
 * that writes has nbd-server write the same bytes to its copy-on-write diff, which the process's
 * wchar counts too. And a process killed has no postrun to report its end: its last sample counts.
 * Real daemon, real nbd-server, real nbdsh clients.
 */
const MiB = 1 << 20;
const written = 24 * MiB;
const read = 8 * MiB;

/** Sparse, with 1 MiB of data every 8 MiB so that nbd-server reads real data too. */
function sparseImage(dir: string): string {
  const file = path.join(dir, 'scratch.img');
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, 64 * MiB);
    for (let offset = 0; offset < 64 * MiB; offset += 8 * MiB) fs.writeSync(fd, Buffer.alloc(MiB, 0xa5), 0, MiB, offset);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

/** Python for nbdsh's handle `h`: writes `written` bytes in 4 MiB requests, flushed by the reads that follow. */
const writes = `
data = b"\\x5a" * (4 << 20)
for offset in range(0, ${written}, 4 << 20):
    h.pwrite(data, offset)
`;
const reads = `
got = 0
while got < ${read}:
    got += len(h.pread(4 << 20, got))
print("read", got, flush=True)
`;

function sentTotal(metrics: string, exportName: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`nbdmux_bytes_sent_total{export="${exportName}"} `));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('bytes sent are what the client received', () => {
  let daemon: RunningDaemon;
  let image: string;
  let dir: string;
  const dataDirs: string[] = [];

  beforeAll(async () => {
    dir = tempDir('nbdmux-writes-');
    image = sparseImage(dir);
    daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    expect((await api(daemon, 'POST', '/exports', { name: 'scratch', file: image, cow: true })).status).toBe(201);
    expect((await api(daemon, 'POST', '/exports', { name: 'plain', file: image })).status).toBe(201);
  });
  afterAll(() => killEverything(dataDirs));

  const metricsOf = async (exportName: string) => sentTotal((await api(daemon, 'GET', '/metrics')).text, exportName);
  const rowsOf = async () => trpcClient(daemon.url).connections.list.query({ limit: 1000 });

  it('counts neither a short nor a long connection the bytes its client wrote', async () => {
    const before = await metricsOf('scratch');
    const uri = daemon.nbdUri('scratch');
    // Shorter than a sampling interval: only the count at the end was ever read.
    const short = await nbdsh(['-u', uri, '-c', `${writes}${reads}h.shutdown()\n`]);
    expect([short.code, short.stdout.toString().trim(), short.stderr.toString()]).toEqual([0, `read ${read}`, '']);

    // Sampled while it lasts: the live samples (the process's wchar) hold the writes.
    const stopFile = path.join(dir, 'stop');
    const session = startNbdshSession(
      uri,
      `${writes}print("ready", flush=True)\nimport os, time\nwhile not os.path.exists(${JSON.stringify(stopFile)}):\n    time.sleep(0.02)\n${reads}h.shutdown()\n`,
      'ready',
      stopFile,
    );
    await session.ready;
    const live = await waitFor('the writes to be sampled', async () =>
      (await rowsOf()).find((row) => row.live && row.exportName === 'scratch' && row.bytesSent >= written),
    );
    // The counter, which cannot go down again, does not take them.
    const shortRow = (await rowsOf()).find((row) => !row.live && row.exportName === 'scratch')!;
    expect((await metricsOf('scratch')) - before).toBe(shortRow.bytesSent);
    const long = await session.finish();
    expect([long.code, long.stdout.trim(), long.stderr]).toEqual([0, `ready\nread ${read}`, '']);

    const rows = await waitFor('both connections to be seen closing', async () => {
      const all = (await rowsOf()).filter((row) => row.exportName === 'scratch');
      return all.length === 2 && all.every((row) => !row.live) ? all : undefined;
    });
    const longRow = rows.find((row) => row.id === live.id)!;
    console.log(`each client wrote ${written} and read ${read}: history says ${shortRow.bytesSent} and ${longRow.bytesSent} sent`);
    for (const row of rows) {
      // Read replies, the handshake and a 16-byte reply per write: far under 1% of what was read.
      expect(row.bytesSent).toBeGreaterThanOrEqual(read);
      expect(row.bytesSent).toBeLessThanOrEqual(read * 1.01);
    }
    expect((await metricsOf('scratch')) - before).toBe(shortRow.bytesSent + longRow.bytesSent);
  }, 60_000);

  it('counts the last sample of a process killed before its postrun could report', async () => {
    const before = await metricsOf('plain');
    const stopFile = path.join(dir, 'never');
    const session = startNbdshSession(
      daemon.nbdUri('plain'),
      `h.pread(${read}, 0)\nprint("ready", flush=True)\nimport os, time\nwhile not os.path.exists(${JSON.stringify(stopFile)}):\n    time.sleep(0.02)\n`,
      'ready',
      stopFile,
    );
    await session.ready;
    // The client is idle from here on, so the figure a sample shows is the one the process ends with.
    const sampled = await waitFor('the read to be sampled', async () =>
      (await rowsOf()).find((row) => row.live && row.exportName === 'plain' && row.bytesSent >= read),
    );
    expect(sampled.bytesSent).toBeLessThanOrEqual(read * 1.01);
    // Counted live once: the close must not count it again.
    expect((await metricsOf('plain')) - before).toBe(sampled.bytesSent);
    process.kill(sampled.pid!, 'SIGKILL');
    const row = await waitFor('the killed connection to be seen closing', async () =>
      (await rowsOf()).find((candidate) => candidate.id === sampled.id && !candidate.live),
    );
    expect(row).toMatchObject({ signal: 'SIGKILL', bytesSent: sampled.bytesSent });
    expect((await metricsOf('plain')) - before).toBe(sampled.bytesSent);
    session.child.kill('SIGKILL');
  }, 60_000);
});
