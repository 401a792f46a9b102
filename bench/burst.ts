import fs from 'node:fs';
import { alternate, ratio, row, seconds, settledCpu, type BenchOptions, type BenchResult } from './lib/measure.js';
import { connectNbd } from './lib/nbd-client.js';
import { startAll, startBareNbdServer, startNbdmux, stopAll } from './lib/servers.js';
import { api } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';

const variants = ['fast', 'plain', 'bare'] as const;
type Variant = (typeof variants)[number];

/** A bare nbd-server client that has no greeting by then never gets one (see the note below). */
const bareLostAfterMs = 5000;

/**
 * A boot storm: N clients connect at the same moment, each reads the whole 1 MiB image, checks
 * every byte and disconnects. Measures the time until the last one is done and the CPU the
 * server side spent on the burst (the server process plus every child it reaped), nbdmux with
 * and without the shim. A bare nbd-server daemon runs the same burst for reference.
 */
export async function burst({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const clients = smoke ? 5 : 50;
  const image = makeImage(workDir, 'burst.img', 1 << 20);
  const expected = fs.readFileSync(image);
  const servers = await startAll({
    fast: () => startNbdmux(workDir, 'nbdmux fast start', true),
    plain: () => startNbdmux(workDir, 'nbdmux plain', false),
    bare: () => startBareNbdServer(workDir, { disk: image }),
  });
  try {
    for (const variant of ['fast', 'plain'] as const) {
      if ((await api(servers[variant], 'POST', '/exports', { name: 'disk', file: image })).status !== 201)
        throw new Error('cannot create export');
    }
    const cpu: Record<Variant, number[]> = { fast: [], plain: [], bare: [] };
    const served: Record<Variant, number[]> = { fast: [], plain: [], bare: [] };
    const wall = await alternate(smoke ? 1 : 3, variants, async (variant) => {
      const server = servers[variant];
      const before = await settledCpu({ server });
      const start = process.hrtime.bigint();
      let last = 0;
      const outcomes = await Promise.allSettled(
        Array.from({ length: clients }, async () => {
          const conn = await connectNbd(server.nbdPort, 'disk', variant === 'bare' ? bareLostAfterMs : 120_000);
          const bytes = await conn.read(0, conn.size);
          if (!bytes.equals(expected)) throw new Error(`${server.label} served wrong bytes`);
          last = seconds(start);
          await conn.disconnect();
        }),
      );
      const failures = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason as Error] : []));
      const wrong = failures.find((err) => err.message.includes('wrong bytes'));
      if (wrong || (variant !== 'bare' && failures.length > 0)) throw wrong ?? failures[0]!;
      served[variant].push(clients - failures.length);
      cpu[variant].push((await settledCpu({ server })).server - before.server);
      return last;
    });
    const label: Record<Variant, string> = {
      fast: 'nbdmux, fast start',
      plain: 'nbdmux, no shim',
      bare: 'bare nbd-server (daemon), clients served only',
    };
    const wallRow = (v: Variant) => row(`${label[v]}: all served`, wall[v], 's');
    const cpuRow = (v: Variant) => row(`${label[v]}: server CPU`, cpu[v], 's');
    const lostByBare = served.bare.map((n) => clients - n);
    return {
      name: `burst of ${clients} simultaneous clients, each reading 1 MiB`,
      rows: [wallRow('fast'), wallRow('plain'), wallRow('bare'), cpuRow('fast'), cpuRow('plain'), cpuRow('bare')],
      ratios: [
        ratio('fast start / no shim, time until all served', wallRow('fast'), wallRow('plain')),
        ratio('fast start / no shim, server CPU', cpuRow('fast'), cpuRow('plain')),
      ],
      notes: [
        `bare nbd-server lost ${lostByBare.join(', ')} of ${clients} clients in its rounds: its listen backlog is 10, so in a burst the kernel answers with SYN cookies and drops the connections its full accept queue cannot take; the client believes it is connected and waits for a greeting that never comes (counted lost after ${bareLostAfterMs / 1000} s). nbdmux listens with a backlog of 511 and queues starts itself.`,
      ],
    };
  } finally {
    await stopAll(servers);
  }
}
