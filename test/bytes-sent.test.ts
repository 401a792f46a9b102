import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { nbdsh, startNbdshSession } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

/**
 * Bytes sent are counted to the byte for connections of any length, most of them far shorter
 * than the daemon's one-second sampling of /proc. Real daemon, real nbd-server, real nbdcopy and
 * nbdsh; the clients' own count of what they read is the reference. What nbd-server sends on top
 * (handshake, a 16-byte header per reply) is well under 1% of a 1 MiB read.
 */
const MiB = 1 << 20;
const imageBytes = 100 * MiB;
/** The nbdsh connections read 1 to 90 MiB, each size once; nbdcopy reads the whole image 10 times. */
const nbdshSizes = Array.from({ length: 90 }, (_, i) => (1 + ((i * 37) % 90)) * MiB);
const nbdcopyReads = 10;

/** Sparse but not empty: holes read as zeros, with 1 MiB of data every 8 MiB, so nbd-server reads real data too. */
function sparseImage(dir: string): string {
  const file = path.join(dir, 'sparse.img');
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, imageBytes);
    const data = Buffer.alloc(MiB, 0xa5);
    for (let offset = 0; offset < imageBytes; offset += 8 * MiB) fs.writeSync(fd, data, 0, data.length, offset);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

/**
 * One connection per size, one after another, each connected, read in 4 MiB requests and shut
 * down; prints each one's read bytes, then in ms its handshake, its reads and its shutdown (until
 * nbd-server closed the connection).
 */
function sequentialReads(uri: string, sizes: readonly number[]): string {
  return `
import time
for size in ${JSON.stringify(sizes)}:
    started = time.monotonic()
    c = nbd.NBD()
    c.connect_uri(${JSON.stringify(uri)})
    connected = time.monotonic()
    read = 0
    while read < size:
        read += len(c.pread(min(4 << 20, size - read), read))
    served = time.monotonic()
    c.shutdown()
    del c
    ms = lambda a, b: int((b - a) * 1000)
    print("read", read, ms(started, connected), ms(connected, served), ms(served, time.monotonic()), flush=True)
`;
}

/** "min-median-max" of some times. */
function range(ms: number[]): string {
  const sorted = [...ms].sort((a, b) => a - b);
  return `${sorted[0]}-${sorted[sorted.length >> 1]}-${sorted[sorted.length - 1]}`;
}

/** A subreaper that runs its command and reaps every process orphaned under it at once (prctl 36: PR_SET_CHILD_SUBREAPER). */
const promptReaper = `
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
if os.fork() == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.05)
`;

function childPids(pid: number): number[] {
  return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
}

function sentTotal(metrics: string, exportName: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`nbdmux_bytes_sent_total{export="${exportName}"} `));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('bytes sent per connection', () => {
  let daemon: RunningDaemon;
  let image: string;
  const dataDirs: string[] = [];

  beforeAll(async () => {
    image = sparseImage(tempDir('nbdmux-images-'));
    daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    expect((await api(daemon, 'POST', '/exports', { name: 'sparse', file: image })).status).toBe(201);
  });
  afterAll(() => killEverything(dataDirs));

  const metricsOf = async (d: RunningDaemon) => sentTotal((await api(d, 'GET', '/metrics')).text, 'sparse');
  const rowsOf = async (d: RunningDaemon) => trpcClient(d.url).connections.list.query({ limit: 1000 });

  it('counts 100 connections of 1-100 MiB, most shorter than a sampling interval, as their clients read them', async () => {
    const before = await metricsOf(daemon);
    const uri = daemon.nbdUri('sparse');
    const half = nbdshSizes.length / 2;
    // Three clients at a time: two nbdsh scripts of 45 connections each, and nbdcopy 10 times.
    const [first, second, copies] = await Promise.all([
      nbdsh(['-c', sequentialReads(uri, nbdshSizes.slice(0, half))]),
      nbdsh(['-c', sequentialReads(uri, nbdshSizes.slice(half))]),
      (async () => {
        const codes: Array<number | null> = [];
        // --no-extents: every byte is read, holes too, so the client read the whole image.
        for (let i = 0; i < nbdcopyReads; i++) codes.push((await run('nbdcopy', ['--connections=1', '--no-extents', uri, 'null:'])).code);
        return codes;
      })(),
    ]);
    expect([first.code, second.code, first.stderr + second.stderr]).toEqual([0, 0, '']);
    expect(copies).toEqual(Array(nbdcopyReads).fill(0));
    const reads = [
      ...Buffer.concat([first.stdout, second.stdout])
        .toString()
        .matchAll(/^read (\d+) (\d+) (\d+) (\d+)$/gm),
    ].map((m) => ({
      bytes: Number(m[1]),
      handshakeMs: Number(m[2]),
      ms: Number(m[3]),
      shutdownMs: Number(m[4]),
    }));
    expect(reads).toHaveLength(nbdshSizes.length);
    const clientsRead = reads.reduce((sum, r) => sum + r.bytes, 0) + nbdcopyReads * imageBytes;
    expect(clientsRead).toBe(nbdshSizes.reduce((sum, size) => sum + size, 0) + nbdcopyReads * imageBytes);
    // The case that counted nothing before: connections served within a sampling interval (1 s).
    // On a loaded host nbd-server's start alone can take longer, so the reads are what is timed.
    const timings = `handshake+reads+shutdown ms: ${reads.map((r) => `${r.handshakeMs}+${r.ms}+${r.shutdownMs}`).join(' ')}`;
    expect(reads.filter((r) => r.ms < 1000).length, timings).toBeGreaterThanOrEqual(reads.length / 2);
    const short = reads.filter((r) => r.ms < 100);

    const rows = await waitFor('every connection to be seen closing', async () => {
      const all = await rowsOf(daemon);
      return all.length >= nbdshSizes.length + nbdcopyReads && all.every((row) => !row.live) ? all : undefined;
    });
    const sent = rows.reduce((sum, row) => sum + row.bytesSent, 0);
    console.log(
      `clients read ${clientsRead} bytes over ${rows.length} connections (${short.length} served in under 100 ms after a handshake of ${range(reads.map((r) => r.handshakeMs))} ms; shutdowns ${range(reads.map((r) => r.shutdownMs))} ms); history says ${sent} sent (+${(((sent - clientsRead) / clientsRead) * 100).toFixed(4)}%)`,
    );
    expect(rows.every((row) => row.exportName === 'sparse' && row.outcome === 'closed')).toBe(true);
    // No connection is counted short, and what comes on top is protocol.
    expect(sent).toBeGreaterThanOrEqual(clientsRead);
    expect(sent).toBeLessThanOrEqual(clientsRead * 1.01);
    for (const [index, r] of reads.entries())
      expect(
        rows.some((row) => row.bytesSent >= r.bytes),
        `read #${index}`,
      ).toBe(true);
    // The counter grows by exactly what the history holds.
    expect((await metricsOf(daemon)) - before).toBe(sent);
  }, 120_000);

  it('counts the last bytes of a connection adopted after a restart when it ends under a sampling interval later', async () => {
    // The first daemon runs under a subreaper that reaps at once, as systemd does: its serving
    // process, orphaned by the restart, leaves no zombie whose /proc entry would still hold its count.
    const first = await startDaemon({ wrapper: ['/usr/bin/python3', '-c', promptReaper] });
    dataDirs.push(first.dataDir);
    expect((await api(first, 'POST', '/exports', { name: 'sparse', file: image })).status).toBe(201);
    const stopFile = path.join(tempDir('nbdmux-stop-'), 'stop');
    const script = `
h.pread(8 << 20, 0)
print("ready", flush=True)
import os, time
while not os.path.exists(${JSON.stringify(stopFile)}):
    time.sleep(0.02)
read = 0
while read < (64 << 20):
    read += len(h.pread(4 << 20, 8 * (1 << 20) + read))
h.shutdown()
`;
    const session = startNbdshSession(first.nbdUri('sparse'), script, 'ready', stopFile);
    await session.ready;
    await waitFor('the connection to be negotiated', async () =>
      (await rowsOf(first)).some((row) => row.live && row.exportName === 'sparse') ? true : undefined,
    );
    const rowsBefore = (await rowsOf(first)).length;
    const [nbdmux] = childPids(first.child.pid!);
    process.kill(nbdmux!, 'SIGTERM');
    await waitFor('the first daemon to exit', () => (childPids(first.child.pid!).includes(nbdmux!) ? undefined : true));
    const restarted = await startDaemon({ dataDir: first.dataDir, nbdPort: first.nbdPort });
    const [adopted] = await trpcClient(restarted.url).connections.list.query({ live: true });
    expect(adopted).toMatchObject({ exportName: 'sparse', live: true });
    const before = await metricsOf(restarted);

    // 64 MiB more, then the end, within far less than the new daemon's one-second sampling.
    expect((await session.finish()).code).toBe(0);
    const row = await waitFor(
      'the adopted connection to be seen closing',
      async () => (await rowsOf(restarted)).find((r) => r.id === adopted!.id && !r.live),
      15_000,
    );
    expect((await rowsOf(restarted)).length).toBe(rowsBefore);
    const clientRead = 72 * MiB;
    expect(row.bytesSent).toBeGreaterThanOrEqual(clientRead);
    expect(row.bytesSent).toBeLessThanOrEqual(clientRead * 1.01);
    // This daemon counts what was sent while it ran; the first 8 MiB were the old one's to count.
    const counted = (await metricsOf(restarted)) - before;
    expect(counted).toBeGreaterThanOrEqual(64 * MiB);
    expect(counted).toBeLessThanOrEqual(64 * MiB * 1.01);
  }, 60_000);
});
