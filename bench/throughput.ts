import { alternate, ratio, row, type BenchOptions, type BenchResult } from './lib/measure.js';
import { startAll, startBareNbdServer, startNbdmux, stopAll } from './lib/servers.js';
import { api } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { debianPythonEnv, runOrThrow } from '../testkit/process.js';

/**
 * Reads the whole image with libnbd (256 KiB requests, 16 in flight) after the handshake, so
 * connect time is left out: nbdmux hands the accepted socket to nbd-server and is not on the
 * data path, so the comparison is inetd-mode nbd-server (with the shim) against a daemon's
 * forked child.
 */
const readAll = `
import time
size = h.get_size()
chunk = 256 * 1024
depth = 16
done = [0]
def completed(length):
    def cb(error):
        done[0] += length
        return 1
    return cb
buffers = [nbd.Buffer(chunk) for _ in range(depth)]
start = time.monotonic()
offset = 0
i = 0
while offset < size or h.aio_in_flight() > 0:
    while offset < size and h.aio_in_flight() < depth:
        n = min(chunk, size - offset)
        h.aio_pread(buffers[i % depth] if n == chunk else nbd.Buffer(n), offset, completion=completed(n))
        offset += n
        i += 1
    h.poll(-1)
elapsed = time.monotonic() - start
assert done[0] == size, (done[0], size)
print(elapsed)
`;

export async function throughput({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const bytes = smoke ? 8 << 20 : 1 << 30;
  const image = makeImage(workDir, 'throughput.img', bytes);
  const { bare, nbdmux } = await startAll({
    bare: () => startBareNbdServer(workDir, { disk: image }),
    nbdmux: () => startNbdmux(workDir, 'nbdmux', true),
  });
  try {
    if ((await api(nbdmux, 'POST', '/exports', { name: 'disk', file: image })).status !== 201) throw new Error('cannot create export');
    const ports = { bare: bare.nbdPort, nbdmux: nbdmux.nbdPort };
    const measure = async (variant: keyof typeof ports) => {
      const secs = Number(
        await runOrThrow('nbdsh', ['-u', `nbd://127.0.0.1:${ports[variant]}/disk`, '-c', readAll], {
          env: debianPythonEnv,
          timeoutMs: 120_000,
        }),
      );
      return bytes / secs / 1e9;
    };
    // One untimed read each: page cache and client warm for both sides alike.
    await measure('bare');
    await measure('nbdmux');
    const samples = await alternate(smoke ? 1 : 5, ['bare', 'nbdmux'] as const, measure);
    const bareRow = row('bare nbd-server (daemon, forked child)', samples.bare, 'GB/s');
    const nbdmuxRow = row('nbdmux (inetd nbd-server, fast start)', samples.nbdmux, 'GB/s');
    return {
      name: `data path: full read of a ${bytes >> 20} MiB image, 1 connection, connect excluded`,
      rows: [bareRow, nbdmuxRow],
      ratios: [ratio('nbdmux / bare throughput', nbdmuxRow, bareRow, '>= 0.95')],
      notes: [],
    };
  } finally {
    await stopAll({ bare, nbdmux });
  }
}
