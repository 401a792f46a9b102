import { alternate, ratio, row, seconds, settledCpu, type BenchOptions, type BenchResult, type Row } from './lib/measure.js';
import { connectNbd } from './lib/nbd-client.js';
import { startAll, startBareNbdServer, startNbdmux, stopAll } from './lib/servers.js';
import { api } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { runOrThrow } from '../testkit/process.js';

const variants = ['bare', 'fast', 'pool', 'plain'] as const;
/** Enough processes waiting for one client at a time, and for the refill to keep up between rounds. */
const warmPoolSize = 4;
type Variant = (typeof variants)[number];

/**
 * Connect + handshake (NBD_OPT_GO) until the export is ready, one client at a time, and the
 * CPU each connection costs the server side (the server process and every child it reaped:
 * nbd-server processes, their prerun shells). Timed twice: with an in-process client (the
 * server's share alone) and with nbdinfo (what a real client program sees, its own start-up
 * included). nbdmux runs three ways: fast start, fast start with a warm pool, and no shim.
 */
export async function handshake({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const image = makeImage(workDir, 'handshake.img', 1 << 20);
  const servers = await startAll({
    bare: () => startBareNbdServer(workDir, { disk: image }),
    fast: () => startNbdmux(workDir, 'nbdmux fast start', true),
    pool: () => startNbdmux(workDir, 'nbdmux warm pool', true, warmPoolSize),
    plain: () => startNbdmux(workDir, 'nbdmux plain', false),
  });
  try {
    for (const variant of ['fast', 'pool', 'plain'] as const) {
      if ((await api(servers[variant], 'POST', '/exports', { name: 'disk', file: image })).status !== 201)
        throw new Error('cannot create export');
    }
    const inProcess = async (variant: Variant) => {
      const start = process.hrtime.bigint();
      const conn = await connectNbd(servers[variant].nbdPort, 'disk');
      const elapsed = seconds(start);
      await conn.disconnect();
      return elapsed * 1000;
    };
    const withNbdinfo = async (variant: Variant) => {
      const start = process.hrtime.bigint();
      await runOrThrow('nbdinfo', ['--size', `nbd://127.0.0.1:${servers[variant].nbdPort}/disk`]);
      return seconds(start) * 1000;
    };
    for (const variant of variants) await inProcess(variant); // warm-up, untimed
    const cpuBefore = await settledCpu(servers);
    const rounds = smoke ? 1 : 20;
    const direct = await alternate(rounds, variants, inProcess);
    const cpuAfter = await settledCpu(servers);
    const viaNbdinfo = await alternate(smoke ? 1 : 10, variants, withNbdinfo);

    const label: Record<Variant, string> = {
      bare: 'bare nbd-server (daemon)',
      fast: 'nbdmux, fast start',
      pool: `nbdmux, fast start, --nbd-warm-pool ${warmPoolSize}`,
      plain: 'nbdmux, no shim',
    };
    const rowsOf = (what: string, samples: (v: Variant) => number[], unit: string) =>
      Object.fromEntries(variants.map((v) => [v, row(`${label[v]}: ${what}`, samples(v), unit)])) as Record<Variant, Row>;
    const directRows = rowsOf('in-process client', (v) => direct[v], 'ms');
    const nbdinfoRows = rowsOf('nbdinfo --size', (v) => viaNbdinfo[v], 'ms');
    const cpuRows = rowsOf('server CPU per connection', (v) => [((cpuAfter[v] - cpuBefore[v]) * 1000) / rounds], 'ms');
    return {
      name: 'connect + handshake latency, one client at a time',
      rows: [...Object.values(directRows), ...Object.values(nbdinfoRows), ...Object.values(cpuRows)],
      ratios: [
        ratio('fast start / bare, in-process client', directRows.fast, directRows.bare, '<= 1.5'),
        ratio('warm pool / bare, in-process client', directRows.pool, directRows.bare, '<= 1.5'),
        ratio('no shim / bare, in-process client', directRows.plain, directRows.bare, '<= 1.5'),
        ratio('fast start / bare, nbdinfo', nbdinfoRows.fast, nbdinfoRows.bare, '<= 1.1'),
        ratio('warm pool / bare, nbdinfo', nbdinfoRows.pool, nbdinfoRows.bare, '<= 1.1'),
        ratio('no shim / bare, nbdinfo', nbdinfoRows.plain, nbdinfoRows.bare, '<= 1.1'),
        ratio('fast start / bare, CPU per connection', cpuRows.fast, cpuRows.bare),
        ratio('warm pool / bare, CPU per connection', cpuRows.pool, cpuRows.bare),
        ratio('no shim / bare, CPU per connection', cpuRows.plain, cpuRows.bare),
      ],
      notes: ['CPU is counted in clock ticks (10 ms) over all rounds, then divided by the number of connections.'],
    };
  } finally {
    await stopAll(servers);
  }
}
