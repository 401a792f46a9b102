import path from 'node:path';
import { alternate, ratio, row, seconds, type BenchOptions, type BenchResult, type Ratio, type Row } from './lib/measure.js';
import { connectNbd } from './lib/nbd-client.js';
import { startAll, startBareNbdServer, startNbdmux, stopAll, type Nbdmux } from './lib/servers.js';
import { detectFastStart } from '../src/supervisor/fast-start.js';
import { api } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { run, runOrThrow } from '../testkit/process.js';

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

      // Where an in-process client's time goes: until POST is answered (the config written), then the client's own start.
      const answered: number[] = [];
      const throughNbdmux = async (client: 'in-process' | 'nbdinfo') => {
        const name = `probe-${probe++}`;
        const start = process.hrtime.bigint();
        if ((await api(nbdmux, 'POST', '/exports', { name, file: image })).status !== 201) throw new Error(`cannot create ${name}`);
        if (client === 'in-process') answered.push(seconds(start) * 1000);
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
        if (client === 'in-process') {
          rows.push(
            row(`${count} exports: of which POST answered (the config written)`, answered, 'ms'),
            row(
              `${count} exports: of which the client, after the answer`,
              samples.nbdmux.map((total, i) => total - answered[i]!),
              'ms',
            ),
            row(
              `${count} exports: nbd-server started on this config, no client (exits at its greeting)`,
              await configReads(nbdmux, smoke),
              'ms',
            ),
          );
        }
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

/**
 * Milliseconds each of a few nbd-server starts takes on the daemon's current full config, run as
 * nbdmux runs it (with the fast-start shim) but with no client: it parses every section, then
 * fails its greeting on /dev/null and exits. Against the row at 0 exports: the config's cost per start.
 */
async function configReads(nbdmux: Nbdmux, smoke: boolean): Promise<number[]> {
  const fastStart = await detectFastStart('nbd-server');
  const env = fastStart.enabled ? { ...process.env, ...fastStart.env } : process.env;
  const config = path.join(nbdmux.dataDir, 'nbd-server.conf');
  const times: number[] = [];
  for (let i = 0; i < (smoke ? 1 : 10); i++) {
    const start = process.hrtime.bigint();
    const result = await run('nbd-server', ['-d', '-C', config], { env });
    if (!/Negotiation failed/.test(result.stderr))
      throw new Error(`nbd-server did not get to its greeting on ${config}: ${result.stderr.trim()}`);
    times.push(seconds(start) * 1000);
  }
  return times;
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
