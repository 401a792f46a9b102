import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { waitFor } from '../testkit/daemon.js';
import { testImporter } from '../testkit/image-fixtures.js';
import { freePort } from '../testkit/ports.js';
import { runOrThrow, startProcess } from '../testkit/process.js';
import { alternate, ratio, row, type BenchOptions, type BenchResult, type Ratio, type Row } from './lib/measure.js';

/**
 * Import of an .img.xz over HTTP into the image store, against what an operator would type:
 * `curl URL | xz -d > file`. Both read the same file from the same server (python3's
 * http.server, in its own process so that it does not share the importer's event loop) and
 * write to the same disk; the importer also hashes the download, skips zero blocks and syncs.
 * Two images: one like a disk (zeros, random, and bytes of 4 bits of entropy, which xz halves)
 * and one that xz cannot shrink, where decompression is cheapest and the importer's own cost
 * shows most.
 */
export async function importThroughput({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const mib = smoke ? 8 : 200;
  const dir = fs.mkdtempSync(path.join(workDir, 'import-'));
  const images = { disk: 'disk-like.img', random: 'incompressible.img' } as const;
  writeImage(path.join(dir, images.disk), mib, (i) =>
    i % 4 === 0 ? Buffer.alloc(1 << 20) : i % 4 === 1 ? crypto.randomBytes(1 << 20) : lowEntropy(),
  );
  writeImage(path.join(dir, images.random), mib, () => crypto.randomBytes(1 << 20));
  for (const name of Object.values(images)) {
    // Packing is not measured: the fastest preset, every core.
    await runOrThrow('xz', ['-T0', '-0', path.join(dir, name)], { timeoutMs: 600_000 });
  }
  const port = await freePort();
  const server = startProcess('python3', ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', dir, String(port)]);
  const rows: Row[] = [];
  const ratios: Ratio[] = [];
  try {
    const urlOf = (name: string) => `http://127.0.0.1:${port}/${name}.xz`;
    await waitFor(
      'http.server to listen',
      () =>
        fetch(urlOf(images.disk), { method: 'HEAD' }).then(
          (r) => (r.ok ? true : undefined),
          () => undefined,
        ),
      10_000,
    );
    const { importer } = testImporter(path.join(dir, 'store'));
    for (const [kind, name] of Object.entries(images)) {
      const url = urlOf(name);
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
      const curlRow = row(`${kind}: curl URL, piped to xz -d, to a file`, samples.curl, 'MB/s');
      const nbdmuxRow = row(`${kind}: nbdmux import (hash, sparse, fsync, rename)`, samples.nbdmux, 'MB/s');
      rows.push(curlRow, nbdmuxRow);
      ratios.push(ratio(`${kind}: nbdmux / curl+xz throughput`, nbdmuxRow, curlRow, '>= 0.8'));
    }
    return {
      name: `import: a ${mib} MiB image as .img.xz over HTTP on loopback`,
      rows,
      ratios,
      notes: ['MB/s of raw image written (10^6 bytes per second).'],
    };
  } finally {
    server.child.kill('SIGKILL');
    await server.exited;
  }
}

function writeImage(file: string, mib: number, piece: (index: number) => Buffer): void {
  const fd = fs.openSync(file, 'w');
  try {
    for (let i = 0; i < mib; i++) fs.writeSync(fd, piece(i));
  } finally {
    fs.closeSync(fd);
  }
}

/** 1 MiB of bytes drawn from 16 values: what xz shrinks about by half, like binaries and text. */
function lowEntropy(): Buffer {
  const bytes = crypto.randomBytes(1 << 20);
  for (let i = 0; i < bytes.length; i++) bytes[i] = 0x40 + (bytes[i]! & 0x0f);
  return bytes;
}
