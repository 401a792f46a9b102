import { alternate, ratio, row, seconds, type BenchOptions, type BenchResult } from './lib/measure.js';
import { connectNbd, type NbdConnection } from './lib/nbd-client.js';
import { startAll, startNbdmux, stopAll } from './lib/servers.js';
import { api } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { liveChildren, rssBytes } from '../testkit/proc.js';

/**
 * GET /exports latency and the daemon's memory with many exports and live connections, against
 * an empty daemon started in the same run.
 */
export async function controlPlane({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const exportCount = smoke ? 20 : 1000;
  const connectionCount = smoke ? 5 : 100;
  const image = makeImage(workDir, 'control.img', 1 << 20);
  const { loaded, empty } = await startAll({
    loaded: () => startNbdmux(workDir, 'nbdmux, loaded', true),
    empty: () => startNbdmux(workDir, 'nbdmux, empty', true),
  });
  const connections: NbdConnection[] = [];
  try {
    for (let i = 0; i < exportCount; i += 10) {
      const batch = Array.from({ length: Math.min(10, exportCount - i) }, (_, j) =>
        api(loaded, 'POST', '/exports', { name: `vm-${i + j}`, file: image }),
      );
      if ((await Promise.all(batch)).some((r) => r.status !== 201)) throw new Error('cannot register exports');
    }
    for (let i = 0; i < connectionCount; i += 10) {
      const batch = Array.from({ length: Math.min(10, connectionCount - i) }, (_, j) => connectNbd(loaded.nbdPort, `vm-${i + j}`));
      connections.push(...(await Promise.all(batch)));
    }
    const servers = { loaded, empty };
    const getExports = async (variant: keyof typeof servers) => {
      const start = process.hrtime.bigint();
      const response = await api(servers[variant], 'GET', '/exports');
      const elapsed = seconds(start) * 1000;
      const expected = variant === 'loaded' ? exportCount : 0;
      if (response.status !== 200 || (response.json as unknown[]).length !== expected)
        throw new Error(`GET /exports on ${variant} did not list ${expected} exports`);
      return elapsed;
    };
    await getExports('loaded');
    await getExports('empty');
    const samples = await alternate(smoke ? 2 : 50, ['loaded', 'empty'] as const, getExports);
    const loadedRow = row(`GET /exports, ${exportCount} exports, ${connectionCount} live connections`, samples.loaded, 'ms');
    const emptyRow = row('GET /exports, empty daemon', samples.empty, 'ms');
    const rss = { loaded: rssBytes(loaded.pid) / 2 ** 20, empty: rssBytes(empty.pid) / 2 ** 20 };
    const loadedRss = row(`daemon RSS, ${exportCount} exports, ${connectionCount} live connections`, [rss.loaded], 'MiB');
    const emptyRss = row('daemon RSS, empty daemon', [rss.empty], 'MiB');
    const servingRss = liveChildren(loaded.pid).reduce((sum, pid) => sum + safeRss(pid), 0) / 2 ** 20;
    return {
      name: `control plane with ${exportCount} exports and ${connectionCount} live connections`,
      rows: [loadedRow, emptyRow, loadedRss, emptyRss],
      ratios: [ratio('GET /exports, loaded / empty', loadedRow, emptyRow), ratio('daemon RSS, loaded / empty', loadedRss, emptyRss)],
      notes: [
        `the ${connectionCount} serving nbd-server processes hold ${servingRss.toFixed(0)} MiB RSS between them (not counted in the daemon's)`,
      ],
    };
  } finally {
    for (const conn of connections) conn.destroy();
    await stopAll({ loaded, empty });
  }
}

function safeRss(pid: number): number {
  try {
    return rssBytes(pid);
  } catch {
    return 0;
  }
}
