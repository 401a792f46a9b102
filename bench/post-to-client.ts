import { alternate, ratio, row, seconds, type BenchOptions, type BenchResult, type Ratio, type Row } from './lib/measure.js';
import { connectNbd } from './lib/nbd-client.js';
import { startAll, startBareNbdServer, startNbdmux, stopAll } from './lib/servers.js';
import { api } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { runOrThrow } from '../testkit/process.js';

/**
 * From POST /exports to the first client served by the new export, with N exports already
 * registered (every nbd-server start reads a config of N sections), against a plain handshake
 * with a bare nbd-server. The client tries once: POST answers only after the config is written,
 * so the very first connection must succeed.
 */
export async function postToClient({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const image = makeImage(workDir, 'post.img', 1 << 20);
  const { bare, nbdmux } = await startAll({
    bare: () => startBareNbdServer(workDir, { disk: image }),
    nbdmux: () => startNbdmux(workDir, 'nbdmux', true),
  });
  const rows: Row[] = [];
  const ratios: Ratio[] = [];
  const notes: string[] = [];
  try {
    const counts = smoke ? [0, 3] : [0, 100, 1000];
    let registered = 0;
    let probe = 0;
    for (const count of counts) {
      const started = process.hrtime.bigint();
      for (; registered < count; registered += 10) {
        const batch = Array.from({ length: Math.min(10, count - registered) }, (_, i) =>
          api(nbdmux, 'POST', '/exports', { name: `vm-${registered + i}`, file: image }),
        );
        if ((await Promise.all(batch)).some((r) => r.status !== 201)) throw new Error('cannot register exports');
      }
      if (count > 0) notes.push(`registering exports up to ${count} took ${seconds(started).toFixed(1)} s`);

      const throughNbdmux = async (client: 'in-process' | 'nbdinfo') => {
        const name = `probe-${probe++}`;
        const start = process.hrtime.bigint();
        if ((await api(nbdmux, 'POST', '/exports', { name, file: image })).status !== 201) throw new Error(`cannot create ${name}`);
        const elapsed = await firstClient(client, nbdmux.nbdPort, name, start);
        if ((await api(nbdmux, 'DELETE', `/exports/${name}`)).status !== 204) throw new Error(`cannot delete ${name}`);
        return elapsed;
      };
      const bareHandshake = (client: 'in-process' | 'nbdinfo') => firstClient(client, bare.nbdPort, 'disk', process.hrtime.bigint());
      for (const client of ['in-process', 'nbdinfo'] as const) {
        const samples = await alternate(smoke ? 1 : 10, ['nbdmux', 'bare'] as const, (v) =>
          v === 'nbdmux' ? throughNbdmux(client) : bareHandshake(client),
        );
        const postRow = row(`${count} exports: POST, then first ${client} client served`, samples.nbdmux, 'ms');
        const bareRow = row(`${count} exports: baseline, bare nbd-server handshake, ${client}`, samples.bare, 'ms');
        rows.push(postRow, bareRow);
        ratios.push(
          ratio(
            `${count} exports, ${client}: POST to first client / bare handshake`,
            postRow,
            bareRow,
            count === counts.at(-1) ? '<= 1.2' : undefined,
          ),
        );
      }
    }
    return { name: 'POST /exports to a first successful client, by number of exports registered', rows, ratios, notes };
  } finally {
    await stopAll({ bare, nbdmux });
  }
}

/** Milliseconds from `start` until the export is ready (in-process) or nbdinfo is done; the disconnect is not counted. */
async function firstClient(client: 'in-process' | 'nbdinfo', port: number, name: string, start: bigint): Promise<number> {
  if (client === 'nbdinfo') {
    await runOrThrow('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/${name}`]);
    return seconds(start) * 1000;
  }
  const conn = await connectNbd(port, name);
  const elapsed = seconds(start) * 1000;
  await conn.disconnect();
  return elapsed;
}
