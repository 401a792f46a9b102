import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readBootTrace, type BootTrace } from './lib/boot-trace.js';
import { alternate, ratio, row, seconds, settledCpu, type BenchOptions, type BenchResult, type Ratio, type Row } from './lib/measure.js';
import { connectNbd } from './lib/nbd-client.js';
import { startAll, startBareNbdServer, startNbdkit, startNbdmux, stopAll, type Nbdmux, type Server } from './lib/servers.js';
import { api } from '../testkit/daemon.js';

const traceFile = fileURLToPath(new URL('../../bench/traces/debian12-boot.trace.gz', import.meta.url));
const variants = ['nbdmux', 'pool', 'bare', 'nbdkit'] as const;
type Variant = (typeof variants)[number];
/** A third of the largest storm waits started; the rest queue for start slots as without a pool. */
const warmPoolSize = 32;
/** How the ratios name each side. */
const short: Record<Variant, string> = { nbdmux: 'nbdmux', pool: 'nbdmux warm pool', bare: 'bare nbd-server', nbdkit: 'nbdkit' };
/** A client with no export by then counts as refused: a bare nbd-server's dropped connections never get a greeting. */
const attachTimeoutMs = 10_000;

/** What one storm measured: seconds until the last client finished its boot, what was served, each attach and read in ms, and the server's CPU. */
interface Storm {
  totalSeconds: number;
  cpuSeconds: number;
  servedMiB: number;
  attachMs: number[];
  readMs: number[];
  refused: number;
}

/**
 * A boot storm replayed: N clients attach at once, each on its own connection, and make the NBD
 * reads a real Debian 12 boot made (bench/traces, recorded by bench/record-boot-trace.sh) one
 * after the other with the recorded think time left out, so the server is the only thing waited
 * for. Against nbdmux, a bare daemon-mode nbd-server and nbdkit, on the same sparse image of the
 * recorded size (the bytes do not change the timing), rounds alternating between them.
 */
export async function bootStorm({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const full = readBootTrace(traceFile);
  const trace: BootTrace = smoke ? { ...full, reads: full.reads.slice(0, 100) } : full;
  const clientCounts = smoke ? [2] : [10, 50, 100];
  const rounds = smoke ? 1 : 3;
  const image = path.join(workDir, 'boot-storm.img');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, trace.imageSize);
  const servers = await startAll<{ nbdmux: Nbdmux; pool: Nbdmux; bare: Server; nbdkit: Server }>({
    nbdmux: () => startNbdmux(workDir, 'nbdmux', true),
    pool: () => startNbdmux(workDir, `nbdmux, --nbd-warm-pool ${warmPoolSize}`, true, warmPoolSize),
    bare: () => startBareNbdServer(workDir, { disk: image }),
    nbdkit: () => startNbdkit(image),
  });
  try {
    for (const daemon of [servers.nbdmux, servers.pool]) {
      const created = await api(daemon, 'POST', '/exports', { name: 'disk', file: image, readonly: true });
      if (created.status !== 201) throw new Error(`cannot create the export: ${created.status} ${created.text}`);
    }
    // One client each first: a bare nbd-server generates its DH parameters at its first client, not at its start.
    for (const v of variants) await (await connectNbd(servers[v].nbdPort, 'disk')).disconnect();
    const rows: Row[] = [];
    const ratios: Ratio[] = [];
    const refusals: string[] = [];
    for (const clients of clientCounts) {
      const storms: Record<Variant, Storm[]> = { nbdmux: [], pool: [], bare: [], nbdkit: [] };
      await alternate(rounds, variants, async (variant) => {
        const server = { [variant]: servers[variant] } as Record<Variant, Server>;
        const before = await settledCpu(server);
        const storm = await replay(servers[variant].nbdPort, clients, trace);
        storm.cpuSeconds = (await settledCpu(server))[variant] - before[variant];
        storms[variant].push(storm);
        return storm.totalSeconds;
      });
      const figures = Object.fromEntries(
        variants.map((v) => [v, summarise(`${clients} clients, ${servers[v].label}`, storms[v])]),
      ) as Record<Variant, Figures>;
      for (const v of variants)
        rows.push(
          figures[v].total,
          figures[v].throughput,
          figures[v].readP50,
          figures[v].readP99,
          figures[v].attachP50,
          figures[v].attachP99,
          figures[v].cpuPerClient,
        );
      for (const v of ['nbdmux', 'pool', 'nbdkit'] as const) {
        const over = (what: string, pick: (f: Figures) => Row, goal?: string) =>
          ratio(
            `${clients} clients, ${short[v]} / bare nbd-server: ${what}`,
            pick(figures[v]),
            pick(figures.bare),
            v === 'nbdkit' ? undefined : goal,
          );
        ratios.push(
          over('MiB served per second', (f) => f.throughput, '>= 1.0'),
          over('total time', (f) => f.total),
          over('read p50', (f) => f.readP50),
          over('read p99', (f) => f.readP99),
          over('attach p50', (f) => f.attachP50),
          over('attach p99', (f) => f.attachP99),
          over('server CPU per client served', (f) => f.cpuPerClient),
        );
      }
      // The other half of "at least the best of bare nbd-server and nbdkit", and nbdkit's attach times as the bound.
      for (const v of ['nbdmux', 'pool'] as const) {
        const overNbdkit = (what: string, pick: (f: Figures) => Row, goal?: string) =>
          ratio(`${clients} clients, ${short[v]} / nbdkit: ${what}`, pick(figures[v]), pick(figures.nbdkit), goal);
        ratios.push(
          overNbdkit('MiB served per second', (f) => f.throughput, '>= 1.0'),
          overNbdkit('attach p99', (f) => f.attachP99, '<= 1.0'),
          overNbdkit('server CPU per client served', (f) => f.cpuPerClient),
        );
      }
      refusals.push(
        `${clients} clients: ${variants.map((v) => `${servers[v].label}: ${storms[v].map((s) => s.refused).join('/')}`).join(', ')}`,
      );
    }
    return {
      name: `boot storm: ${clientCounts.join(', ')} clients replaying a Debian 12 boot (${trace.reads.length} reads, ${bootMiB(trace).toFixed(1)} MiB each)`,
      rows,
      ratios,
      notes: [
        `trace: ${full.about.find((line) => line.startsWith('recorded')) ?? 'no origin line'}; ${(full.thinkMicros / 1e6).toFixed(0)} s of think time between reads left out`,
        'a bare nbd-server listens with a backlog of 10: in a storm the kernel answers the rest with SYN cookies and drops what its full accept queue cannot take, and those clients wait for a greeting that never comes; its times are those of the clients it served, hence the goals per byte served',
        `clients refused or never greeted within ${attachTimeoutMs / 1000} s, per round (goal for nbdmux: none): ${refusals.join('; ')}`,
        'every client comes from 127.0.0.1: nbdmux runs with --nbd-max-pending-per-client 1023 (default 8), or a storm from one address is capped by design',
        "each client makes one read at a time (a booting kernel keeps several in flight): per-read latency is the server's turnaround under load",
        'server CPU: the server process and every child it reaped (nbdmux: its nbd-server processes, their prerun and postrun shells, pool processes once handed a client), in clock ticks of 10 ms, over the clients served',
      ],
    };
  } finally {
    await stopAll(servers);
  }
}

/** Starts `clients` replays at the same moment and waits for all of them. */
async function replay(port: number, clients: number, trace: BootTrace): Promise<Storm> {
  const storm: Storm = { totalSeconds: 0, cpuSeconds: 0, servedMiB: 0, attachMs: [], readMs: [], refused: 0 };
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      const attachStart = process.hrtime.bigint();
      let connection;
      try {
        connection = await connectNbd(port, 'disk', attachTimeoutMs);
      } catch {
        storm.refused++;
        return;
      }
      storm.attachMs.push(seconds(attachStart) * 1000);
      for (const read of trace.reads) {
        const readStart = process.hrtime.bigint();
        await connection.read(read.offset, read.length);
        storm.readMs.push(seconds(readStart) * 1000);
      }
      storm.totalSeconds = Math.max(storm.totalSeconds, seconds(start));
      storm.servedMiB += bootMiB(trace);
      await connection.disconnect();
    }),
  );
  return storm;
}

function bootMiB(trace: BootTrace): number {
  return trace.reads.reduce((sum, r) => sum + r.length, 0) / 2 ** 20;
}

interface Figures {
  total: Row;
  throughput: Row;
  readP50: Row;
  readP99: Row;
  attachP50: Row;
  attachP99: Row;
  cpuPerClient: Row;
}

/** Each figure as a row over the rounds: the storm's total, and its percentiles of attach and read times. */
function summarise(label: string, storms: Storm[]): Figures {
  const per = (what: string, pick: (s: Storm) => number, unit: string) => row(`${label}: ${what}`, storms.map(pick), unit);
  return {
    total: per('all served booted', (s) => s.totalSeconds, 's'),
    throughput: per('served', (s) => s.servedMiB / s.totalSeconds, 'MiB/s'),
    readP50: per('read p50', (s) => percentile(s.readMs, 0.5), 'ms'),
    readP99: per('read p99', (s) => percentile(s.readMs, 0.99), 'ms'),
    attachP50: per('attach p50', (s) => percentile(s.attachMs, 0.5), 'ms'),
    attachP99: per('attach p99', (s) => percentile(s.attachMs, 0.99), 'ms'),
    cpuPerClient: per('server CPU per client served', (s) => (s.cpuSeconds * 1000) / s.attachMs.length, 'ms'),
  };
}

/** Nearest-rank percentile; NaN when nothing was measured (every client refused). */
function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}
