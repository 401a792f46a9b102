import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createHistogram } from 'node:perf_hooks';
import { waitFor } from '../testkit/daemon.js';
import { testImporter } from '../testkit/image-fixtures.js';
import { freePort } from '../testkit/ports.js';
import { runOrThrow, startProcess } from '../testkit/process.js';
import { whileSampling } from './lib/loop-delay.js';
import { alternate, ratio, row, type BenchOptions, type BenchResult, type Ratio, type Row } from './lib/measure.js';
import { writeStoredXz } from './lib/stored-xz.js';

/**
 * Import over HTTP into the image store, against what an operator would type: `curl URL | xz -d
 * > file` (or zstd), and `qemu-img convert` for a qcow2. Every side reads the same file from the
 * same server (python3's http.server, in its own process so that it does not share the importer's
 * event loop) and writes to the same disk; the importer also hashes the download, leaves zero
 * blocks as holes and syncs. A 1 GiB image xz and zstd cannot shrink (decompression is cheapest
 * there and the importer's own cost shows most), as .xz, .zst and qcow2; and a smaller one like a
 * disk (zeros, random, and bytes of 4 bits of entropy, which xz halves). The importer runs in this
 * process: the event loop's delay while it imports is what the daemon's /healthz would see.
 */
export async function importThroughput({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const bigMib = smoke ? 8 : 1024;
  const diskMib = smoke ? 8 : 256;
  const dir = fs.mkdtempSync(path.join(workDir, 'import-'));
  const random = path.join(dir, 'incompressible.img');
  const disk = path.join(dir, 'disk-like.img');
  writeImage(random, bigMib, () => crypto.randomBytes(1 << 20));
  writeImage(disk, diskMib, (i) => (i % 4 === 0 ? Buffer.alloc(1 << 20) : i % 4 === 1 ? crypto.randomBytes(1 << 20) : lowEntropy()));
  // Packing is not measured. xz needs minutes per GiB of random bytes to find it cannot shrink them: stored chunks are what it would write.
  writeStoredXz(random, `${random}.xz`);
  await runOrThrow('xz', ['-t', `${random}.xz`]);
  await runOrThrow('zstd', ['-q', '-1', '-T0', random, '-o', `${random}.zst`], { timeoutMs: 600_000 });
  await runOrThrow('xz', ['-T0', '-0', '-k', disk], { timeoutMs: 600_000 });
  await runOrThrow('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', random, `${random}.qcow2`], { timeoutMs: 600_000 });
  for (const file of [random, disk]) fs.rmSync(file);

  const port = await freePort();
  const server = startProcess('python3', ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', dir, String(port)]);
  const rows: Row[] = [];
  const ratios: Ratio[] = [];
  const loopDelay = createHistogram();
  try {
    const urlOf = (name: string) => `http://127.0.0.1:${port}/${name}`;
    await waitFor(
      'http.server to listen',
      () =>
        fetch(urlOf('incompressible.img.xz'), { method: 'HEAD' }).then(
          (r) => (r.ok ? true : undefined),
          () => undefined,
        ),
      10_000,
    );
    const { importer } = testImporter(path.join(dir, 'store'));
    const out = path.join(dir, 'out.img');
    const nbdmux = async (url: string): Promise<void> => {
      const { file } = await whileSampling(loopDelay, () => importer.start({ key: 'bench', url }, () => {}).done);
      fs.rmSync(file);
    };
    const shell = async (script: string, ...args: string[]): Promise<void> => {
      await runOrThrow('sh', ['-c', script, 'baseline', ...args], { timeoutMs: 600_000 });
      fs.rmSync(out, { force: true });
    };
    const seconds = async (work: () => Promise<void>): Promise<number> => {
      const started = process.hrtime.bigint();
      await work();
      return Number(process.hrtime.bigint() - started) / 1e9;
    };

    const streams = [
      { kind: 'incompressible', name: 'incompressible.img.xz', tool: 'xz', mib: bigMib },
      { kind: 'incompressible', name: 'incompressible.img.zst', tool: 'zstd', mib: bigMib },
      { kind: 'disk-like', name: 'disk-like.img.xz', tool: 'xz', mib: diskMib },
    ] as const;
    for (const { kind, name, tool, mib } of streams) {
      const url = urlOf(name);
      const samples = await alternate(smoke ? 1 : 3, ['curl', 'nbdmux'] as const, async (variant) => {
        const secs = await seconds(() => (variant === 'curl' ? shell(`curl -sSf "$1" | ${tool} -d > "$2"`, url, out) : nbdmux(url)));
        return (mib * 2 ** 20) / secs / 1e6;
      });
      const curlRow = row(`${kind} ${mib} MiB .${name.split('.').at(-1)}: curl URL, piped to ${tool} -d, to a file`, samples.curl, 'MB/s');
      const nbdmuxRow = row(
        `${kind} ${mib} MiB .${name.split('.').at(-1)}: nbdmux import (hash, sparse, fsync, rename)`,
        samples.nbdmux,
        'MB/s',
      );
      rows.push(curlRow, nbdmuxRow);
      ratios.push(ratio(`${kind} .${name.split('.').at(-1)}: nbdmux / curl+${tool} throughput`, nbdmuxRow, curlRow, '>= 1.0'));
    }

    const qcow2 = urlOf('incompressible.img.qcow2');
    const local = path.join(dir, 'incompressible.img.qcow2');
    const convert = 'qemu-img convert -f qcow2 -O raw -S 4k';
    const qcow2Samples = await alternate(smoke ? 1 : 3, ['qemu-img', 'curl+qemu-img', 'nbdmux'] as const, (variant) =>
      seconds(() =>
        variant === 'nbdmux'
          ? nbdmux(qcow2)
          : variant === 'qemu-img'
            ? shell(`${convert} "$1" "$2"`, local, out)
            : shell(`curl -sSf "$1" -o "$2.qcow2" && ${convert} "$2.qcow2" "$2" && rm "$2.qcow2"`, qcow2, out),
      ),
    );
    const qemuRow = row(`qcow2 ${bigMib} MiB: qemu-img convert of the file on disk`, qcow2Samples['qemu-img'], 's');
    const curlQemuRow = row(`qcow2 ${bigMib} MiB: curl URL to a file, then qemu-img convert`, qcow2Samples['curl+qemu-img'], 's');
    const nbdmuxQcow2Row = row(`qcow2 ${bigMib} MiB: nbdmux import by URL`, qcow2Samples.nbdmux, 's');
    rows.push(qemuRow, curlQemuRow, nbdmuxQcow2Row);
    ratios.push(
      ratio('qcow2: nbdmux / qemu-img convert time', nbdmuxQcow2Row, qemuRow, '<= 1.1'),
      ratio('qcow2: nbdmux / curl then qemu-img convert time', nbdmuxQcow2Row, curlQemuRow, '<= 1.0'),
    );
    rows.push({
      what: 'event loop delay while nbdmux imports: p99 (min: mean, max: max)',
      median: loopDelay.percentile(99) / 1e6,
      min: loopDelay.mean / 1e6,
      max: loopDelay.max / 1e6,
      samples: loopDelay.count,
      unit: 'ms',
    });
    return {
      name: `import: ${bigMib} MiB images over HTTP on loopback`,
      rows,
      ratios,
      notes: ['MB/s of raw image written (10^6 bytes per second); qcow2 rows are seconds (lower is better).'],
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
