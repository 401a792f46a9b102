import { ratio, row, seconds, type BenchOptions, type BenchResult } from './lib/measure.js';
import { startNbdmux } from './lib/servers.js';
import { api } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { httpRequest } from '../testkit/raw-http.js';

/**
 * What a flood of unauthenticated boot requests for a name that does not exist costs everyone
 * else: `/healthz` latency during the flood against the same daemon idle, alternating, with many
 * exports registered (a request used to build every export's view first). Each flooding client
 * is a loopback address of its own, requesting one at a time, for a bounded time.
 */
export async function bootFlood({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const exportCount = smoke ? 20 : 1000;
  const flooders = 8;
  const floodMs = smoke ? 500 : 3000;
  const rounds = smoke ? 1 : 4;
  const probesPerPhase = smoke ? 5 : 25;
  const image = makeImage(workDir, 'flood.img', 1 << 20);
  const daemon = await startNbdmux(workDir, 'nbdmux', true);
  try {
    for (let i = 0; i < exportCount; i += 10) {
      const batch = Array.from({ length: Math.min(10, exportCount - i) }, (_, j) =>
        api(daemon, 'POST', '/exports', { name: `vm-${i + j}`, file: image }),
      );
      if ((await Promise.all(batch)).some((r) => r.status !== 201)) throw new Error('cannot register exports');
    }
    const httpPort = Number(new URL(daemon.url).port);
    const probe = async () => {
      const start = process.hrtime.bigint();
      const reply = await httpRequest(httpPort, { path: '/healthz' });
      if (reply.status !== 200) throw new Error(`/healthz answered ${reply.status}`);
      return seconds(start) * 1000;
    };
    const idle: number[] = [];
    const flooded: number[] = [];
    let floodRequests = 0;
    let floodSeconds = 0;
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < probesPerPhase; i++) idle.push(await probe());
      const until = Date.now() + floodMs;
      const started = process.hrtime.bigint();
      const flood = Array.from({ length: flooders }, async (_, n) => {
        // Bounded by time and by count: it stops by itself.
        for (let sent = 0; sent < 100_000 && Date.now() < until; sent++) {
          const reply = await httpRequest(httpPort, { path: '/boot/nope.ipxe', localAddress: `127.0.0.${11 + n}` });
          if (reply.status !== 403) throw new Error(`/boot/nope.ipxe answered ${reply.status}`);
          floodRequests++;
        }
      });
      for (let i = 0; i < probesPerPhase && Date.now() < until; i++) flooded.push(await probe());
      await Promise.all(flood);
      floodSeconds += seconds(started);
    }
    const idleRow = row('/healthz, idle', idle, 'ms');
    const floodRow = row(`/healthz during a flood of /boot/nope.ipxe from ${flooders} addresses`, flooded, 'ms');
    const rate = row('flood requests answered', [floodRequests / floodSeconds], 'req/s');
    return {
      name: `boot-route flood with ${exportCount} exports`,
      rows: [idleRow, floodRow, rate],
      ratios: [ratio('/healthz latency, flooded / idle', floodRow, idleRow)],
      notes: ['each refused boot request looks up the one name it asks for: its cost does not grow with the number of exports'],
    };
  } finally {
    await daemon.stop();
  }
}
