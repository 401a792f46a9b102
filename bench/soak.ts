import fs from 'node:fs';
import path from 'node:path';
import { createNbdmuxClient } from '../src/client.js';
import { judgeGrowth, type Growth, type GrowthLimit, type Series } from './lib/growth.js';
import { row, type BenchOptions, type BenchResult } from './lib/measure.js';
import { connectNbd, type NbdConnection } from './lib/nbd-client.js';
import { startNbdmux, type Nbdmux } from './lib/servers.js';
import { api } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { rssBytes, servingPids } from '../testkit/proc.js';

/** BENCH_SOAK_SECONDS overrides both. */
const defaultSeconds = 600;
const smokeSeconds = 30;
const mib = 2 ** 20;

/**
 * What may grow across the second half of a soak without counting as a leak. Floors cover what a
 * sample catches in flight (the loops below hold up to 6 connections, 1 subscriber); RSS may
 * settle by 10% (V8 grows its heap in steps). The database is judged per connection instead.
 */
const limits: Record<'rss' | 'fds' | 'listeners' | 'children', GrowthLimit> = {
  rss: { floor: 16 * mib, relative: 0.1 },
  fds: { floor: 12, relative: 0 },
  listeners: { floor: 2, relative: 0 },
  children: { floor: 6, relative: 0 },
};
/**
 * Every connection adds a row and a few events, kept for --retain-days: within a soak the
 * database grows by design. What must hold is the cost per connection (the rows of issue 14's
 * history, about 1 KiB measured), not a fixed size.
 */
const dbBytesPerConnectionLimit = 4096;
/**
 * RSS is judged only in runs this long. V8 grows its heap in steps for its first tens of seconds
 * under this load, faster on a faster machine: a 30 s smoke run climbed 110 -> 149 MiB without
 * settling on one host, while on another a 120 s run settled at 121 MiB after 25 s and stayed
 * flat. The other quantities are exact counts and are judged in every run.
 */
const rssJudgedFromSeconds = 120;

/**
 * Runs the daemon under a steady mix of everything an operator and a lab do to it for a bounded
 * time (export churn, NBD connections opening and closing cleanly or cut off, WebSocket
 * subscribers joining and leaving), sampling its RSS, open descriptors, database size, event
 * listeners and serving processes. It fails if any of them still grows in the second half
 * (a least-squares slope, see judgeGrowth), never on a fixed size.
 */
export async function soak({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const seconds = Number(process.env.BENCH_SOAK_SECONDS ?? (smoke ? smokeSeconds : defaultSeconds));
  if (!(seconds >= 10)) throw new Error(`BENCH_SOAK_SECONDS must be at least 10 (got ${process.env.BENCH_SOAK_SECONDS})`);
  const sampleEveryMs = Math.max(500, (seconds * 1000) / 120);
  const image = makeImage(workDir, 'soak.img', 1 << 20);
  const daemon = await startNbdmux(workDir, 'nbdmux', true);
  const done = { exports: 0, connections: 0, cutOff: 0, refused: 0, subscribers: 0 };
  try {
    await create(daemon, 'steady', image);
    const start = Date.now();
    const deadline = start + seconds * 1000;
    let failed = false;
    const running = () => !failed && Date.now() < deadline;
    const samples: Array<Sample & { t: number }> = [];
    const sampler = (async () => {
      while (running()) {
        samples.push({ t: (Date.now() - start) / 1000, ...(await sample(daemon)) });
        await sleep(sampleEveryMs);
      }
    })();
    const loops = [
      churnExports(daemon, image, running, done),
      ...Array.from({ length: 4 }, (_, i) => openAndClose(daemon, i, running, done)),
      joinAndLeave(daemon, running, done),
    ];
    // The first failure ends every loop, so that the daemon is stopped with nothing still running.
    const outcomes = await Promise.allSettled(
      [sampler, ...loops].map((loop) =>
        loop.catch((err: unknown) => {
          failed = true;
          throw err;
        }),
      ),
    );
    const failure = outcomes.find((outcome) => outcome.status === 'rejected');
    if (failure) throw failure.reason;

    const series = (key: keyof Sample, what: string, unit: string, scale = 1): Series => ({
      what,
      unit,
      points: samples.map((s) => ({ t: s.t, value: s[key] / scale })),
    });
    const rss = judgeGrowth(series('rss', 'daemon RSS', 'MiB', mib), { ...limits.rss, floor: limits.rss.floor / mib });
    const growths = [
      ...(seconds >= rssJudgedFromSeconds ? [rss] : []),
      judgeGrowth(series('fds', 'daemon open descriptors', 'fds'), limits.fds),
      judgeGrowth(series('listeners', 'event listeners (system.stats)', 'listeners'), limits.listeners),
      judgeGrowth(series('children', 'serving nbd-server processes', 'processes'), limits.children),
    ];
    const db = judgeGrowth(series('dbBytes', 'database (state.db + WAL)', 'bytes'), { floor: Infinity, relative: 0 });
    const connectionsPerSecond = (done.connections + done.exports) / seconds;
    const dbBytesPerConnection = db.slopePerSecond / connectionsPerSecond;
    const leaks = growths.filter((g) => !g.bounded).map(describe);
    if (dbBytesPerConnection > dbBytesPerConnectionLimit)
      leaks.push(`database grows ${dbBytesPerConnection.toFixed(0)} bytes per connection (limit ${dbBytesPerConnectionLimit})`);
    if (leaks.length > 0)
      throw new Error(`grows without bound over ${seconds} s: ${leaks.join('; ')}\nsamples: ${JSON.stringify(samples)}`);
    if (done.refused > 0) throw new Error(`${done.refused} clients were refused an export that exists while other exports came and went`);

    const last = samples.at(-1)!;
    return {
      name: `soak for ${seconds} s: export churn, NBD connections, subscribers`,
      rows: [
        row('exports created, served once and removed', [done.exports], 'exports'),
        row('NBD connections opened and closed', [done.connections], 'connections'),
        row('of which cut off without NBD_CMD_DISC', [done.cutOff], 'connections'),
        row('NBD clients refused an export that exists', [done.refused], 'clients'),
        row('WebSocket subscribers joined and left', [done.subscribers], 'subscribers'),
        row(
          'daemon RSS over the run',
          samples.map((s) => s.rss / mib),
          'MiB',
        ),
        row(
          'daemon open descriptors over the run',
          samples.map((s) => s.fds),
          'fds',
        ),
        row(
          'database size over the run',
          samples.map((s) => s.dbBytes / mib),
          'MiB',
        ),
      ],
      ratios: [],
      notes: [
        `${samples.length} samples every ${(sampleEveryMs / 1000).toFixed(1)} s; a quantity leaks if the least-squares slope over the second half adds more than max(floor, share of its median, 3 standard deviations of the residuals) across that half:`,
        ...growths.map(describe),
        ...(seconds >= rssJudgedFromSeconds
          ? []
          : [`${describe(rss)}: not judged, a run under ${rssJudgedFromSeconds} s ends before V8's heap settles (BENCH_SOAK_SECONDS)`]),
        `database: ${(db.slopePerSecond / 1024).toFixed(1)} KiB/s in the second half, ${dbBytesPerConnection.toFixed(0)} bytes per connection (limit ${dbBytesPerConnectionLimit}; history is kept for --retain-days, so it grows by design), ${(last.dbBytes / mib).toFixed(1)} MiB at the end`,
      ],
    };
  } finally {
    await daemon.stop();
  }
}

interface Sample {
  rss: number;
  fds: number;
  dbBytes: number;
  listeners: number;
  children: number;
}

async function sample(daemon: Nbdmux): Promise<Sample> {
  const stats = await api(daemon, 'GET', '/trpc/system.stats');
  if (stats.status !== 200) throw new Error(`system.stats answered ${stats.status}: ${stats.text}`);
  const dbBytes = ['state.db', 'state.db-wal', 'state.db-shm']
    .map((file) => path.join(daemon.dataDir, file))
    .reduce((sum, file) => sum + (fs.existsSync(file) ? fs.statSync(file).size : 0), 0);
  return {
    rss: rssBytes(daemon.pid),
    fds: fs.readdirSync(`/proc/${daemon.pid}/fd`).length,
    dbBytes,
    listeners: (stats.json as { result: { data: { eventListeners: number } } }).result.data.eventListeners,
    children: servingPids(daemon.dataDir).length,
  };
}

function describe(g: Growth): string {
  return `${g.what}: ${g.bounded ? 'bounded' : 'GROWS'}, ${signed(g.growth)} ${g.unit} across the second half (allowed ${g.allowed.toFixed(1)}), median ${g.median.toFixed(1)}`;
}

function signed(value: number): string {
  return `${value >= 0 ? '+' : ''}${value.toFixed(1)}`;
}

async function create(daemon: Nbdmux, name: string, file: string): Promise<void> {
  const reply = await api(daemon, 'POST', '/exports', { name, file });
  if (reply.status !== 201) throw new Error(`POST /exports ${name} answered ${reply.status}: ${reply.text}`);
}

/** Creates an export, serves it to one client, removes it: over and over. */
async function churnExports(
  daemon: Nbdmux,
  image: string,
  running: () => boolean,
  done: { exports: number; refused: number },
): Promise<void> {
  for (let i = 0; running(); i++) {
    const name = `churn-${i}`;
    await create(daemon, name, image);
    const connection = await attach(daemon, name, done);
    await connection?.read(0, 4096);
    await connection?.disconnect();
    const reply = await api(daemon, 'DELETE', `/exports/${name}`);
    if (reply.status !== 204) throw new Error(`DELETE /exports/${name} answered ${reply.status}: ${reply.text}`);
    done.exports++;
  }
}

/**
 * Attaches, or counts the refusal and returns null: a client refused an export that exists fails
 * the soak at its end, after the sampling it should not cut short.
 */
async function attach(daemon: Nbdmux, name: string, done: { refused: number }): Promise<NbdConnection | null> {
  try {
    return await connectNbd(daemon.nbdPort, name);
  } catch (err) {
    if (!/refused export/.test((err as Error).message)) throw err;
    done.refused++;
    return null;
  }
}

/** A client that attaches, reads a little and leaves; every third one drops the TCP connection without saying goodbye. */
async function openAndClose(
  daemon: Nbdmux,
  loop: number,
  running: () => boolean,
  done: { connections: number; cutOff: number; refused: number },
): Promise<void> {
  for (let i = 0; running(); i++) {
    const connection = await attach(daemon, 'steady', done);
    if (connection === null) continue;
    for (let read = 0; read < 4; read++) await connection.read(((loop * 4 + read) % 256) * 4096, 4096);
    if (i % 3 === 2) {
      connection.destroy();
      done.cutOff++;
    } else {
      await connection.disconnect();
    }
    done.connections++;
  }
}

/** A dashboard that opens, waits for its first event (or 300 ms), and is closed. */
async function joinAndLeave(daemon: Nbdmux, running: () => boolean, done: { subscribers: number }): Promise<void> {
  while (running()) {
    // A client of its own each time: a WebSocket opened and, a second after unsubscribing, closed.
    const client = createNbdmuxClient({ url: daemon.url });
    await new Promise<void>((resolve, reject) => {
      let left = false;
      const timer = setTimeout(finish, 300);
      const subscription = client.events.stream.subscribe({}, { onData: finish, onError: (err) => reject(err) });
      function finish(): void {
        if (left) return;
        left = true;
        clearTimeout(timer);
        subscription.unsubscribe();
        resolve();
      }
    });
    done.subscribers++;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
