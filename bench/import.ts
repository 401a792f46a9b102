import fs from 'node:fs';
import path from 'node:path';
import { waitFor } from '../test/helpers/daemon.js';
import { makeTestImage, pack, testImporter } from '../test/helpers/image-fixtures.js';
import { freePort } from '../test/helpers/ports.js';
import { runOrThrow, startProcess } from '../test/helpers/process.js';
import { alternate, ratio, row, type BenchOptions, type BenchResult } from './lib/measure.js';

/**
 * Import of an .img.xz over HTTP into the image store, against what an operator would type:
 * `curl URL | xz -d > file`. Both read the same file from the same server (python3's
 * http.server, in its own process so that it does not share the importer's event loop) and
 * write to the same disk; the importer also hashes the download, skips zero blocks and syncs.
 * The image is two thirds random (xz stores it, so decompression is cheap and the importer's
 * own overhead shows) and one third zeros.
 */
export async function importThroughput({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const mib = smoke ? 8 : 200;
  const dir = fs.mkdtempSync(path.join(workDir, 'import-'));
  const image = makeTestImage(dir, 'disk.img', mib);
  await pack(image, 'xz');
  fs.rmSync(image);
  const port = await freePort();
  const server = startProcess('python3', ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', dir, String(port)]);
  const url = `http://127.0.0.1:${port}/disk.img.xz`;
  try {
    await waitFor('http.server to listen', () => fetch(url, { method: 'HEAD' }).then((r) => (r.ok ? true : undefined), () => undefined), 10_000);
    const storeDir = path.join(dir, 'store');
    const { importer } = testImporter(storeDir);
    const measure = async (variant: 'curl' | 'nbdmux'): Promise<number> => {
      const started = process.hrtime.bigint();
      let out: string;
      if (variant === 'curl') {
        out = path.join(dir, 'curl.img');
        await runOrThrow('sh', ['-c', 'curl -sSf "$1" | xz -d > "$2"', 'curl-xz', url, out], { timeoutMs: 300_000 });
      } else {
        out = (await importer.start({ key: 'bench', url }, () => {}).done).file;
      }
      const secs = Number(process.hrtime.bigint() - started) / 1e9;
      fs.rmSync(out);
      return (mib * 2 ** 20) / secs / 1e6;
    };
    const samples = await alternate(smoke ? 1 : 3, ['curl', 'nbdmux'] as const, measure);
    const curlRow = row('curl URL, piped to xz -d, to a file', samples.curl, 'MB/s');
    const nbdmuxRow = row('nbdmux import (hash, sparse, fsync, rename)', samples.nbdmux, 'MB/s');
    return {
      name: `import: a ${mib} MiB image as .img.xz over HTTP on loopback`,
      rows: [curlRow, nbdmuxRow],
      ratios: [ratio('nbdmux / curl+xz throughput', nbdmuxRow, curlRow, '>= 0.8')],
      notes: ['MB/s of raw image written (10^6 bytes per second).'],
    };
  } finally {
    server.child.kill('SIGKILL');
    await server.exited;
  }
}
