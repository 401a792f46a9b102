import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../testkit/daemon.js';
import {
  importOnce,
  makeTestImage,
  pack,
  serveFile,
  sha256Of,
  startImageServer,
  storeEntries,
  testImporter,
  type ImageServer,
  type Route,
} from '../testkit/image-fixtures.js';
import { runOrThrow } from '../testkit/process.js';
import type { ImportError } from '../src/images/importer.js';
import type { ImportProgress } from '../src/images/progress.js';

describe('the import queue, its checks and its leftovers', () => {
  let work: string;
  let image: string;
  let server: ImageServer;
  let fifo: string;
  /** Requests to /held.img wait here until the test lets them go. */
  const held: Array<() => void> = [];
  const holdThenServe =
    (file: string): Route =>
    (req, res) =>
      held.push(() => serveFile(file)(req, res));

  beforeAll(async () => {
    work = tempDir('nbdmux-images-');
    image = makeTestImage(work, 'disk.img', 4);
    const qcow2 = await pack(image, 'qcow2');
    // A small image whose backing file is another file on this machine: what a hostile publisher would ship.
    const hostile = path.join(work, 'hostile.qcow2');
    await runOrThrow('qemu-img', ['create', '-f', 'qcow2', '-b', image, '-F', 'raw', hostile]);
    // A vmdk descriptor whose extent is another file on this machine, by absolute path.
    const descriptor = path.join(work, 'hostile.vmdk');
    const sectors = fs.statSync(image).size / 512;
    const vmdkOf = (extent: string) =>
      [
        '# Disk DescriptorFile',
        'version=1',
        'CID=fffffffe',
        'parentCID=ffffffff',
        'createType="monolithicFlat"',
        `RW ${sectors} FLAT "${extent}" 0`,
        'ddb.virtualHWVersion = "4"',
        '',
      ].join('\n');
    fs.writeFileSync(descriptor, vmdkOf(image));
    // One whose extent is a FIFO nobody writes: `qemu-img info` blocks in open(), doing nothing.
    fifo = path.join(work, 'extent.fifo');
    await runOrThrow('mkfifo', [fifo]);
    fs.writeFileSync(path.join(work, 'fifo.vmdk'), vmdkOf(fifo));
    server = await startImageServer({
      '/disk.img': serveFile(image),
      '/disk.img.qcow2': serveFile(qcow2),
      '/hostile.qcow2': serveFile(hostile),
      '/hostile.vmdk': serveFile(descriptor),
      '/fifo.vmdk': serveFile(path.join(work, 'fifo.vmdk')),
      '/held.img': holdThenServe(image),
    });
  }, 60_000);
  afterAll(async () => {
    // A qemu-img still blocked on the FIFO (an importer without a bound) gets its writer and goes.
    try {
      fs.closeSync(fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    } catch {
      // ENXIO: no reader, nothing blocked
    }
    await server?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('a wrong sha256 fails the import and keeps none of its files, raw or converted', async () => {
    const storeDir = path.join(work, 'sha-store');
    const { importer } = testImporter(storeDir);
    for (const route of ['/disk.img', '/disk.img.qcow2']) {
      const { error } = await importOnce(importer, { key: 'sums', url: server.url(route), sha256: 'ab'.repeat(32) });
      expect(error?.reason, route).toBe('sha256-mismatch');
      expect(error?.message).toContain(`not the expected ${'ab'.repeat(32)}`);
    }
    expect(storeEntries(storeDir)).toEqual([]);
    // The same import with the right sum (in capitals, as some publish it) is kept.
    const right = await importOnce(importer, { key: 'sums', url: server.url('/disk.img'), sha256: sha256Of(image).toUpperCase() });
    expect(right.error).toBeUndefined();
  });

  it('refuses a qcow2 with a backing file and a vmdk whose extent is another file: either would read a file on this machine', async () => {
    const storeDir = path.join(work, 'backing-store');
    const { importer } = testImporter(storeDir);
    const { error } = await importOnce(importer, { key: 'hostile', url: server.url('/hostile.qcow2') });
    expect(error?.reason).toBe('backing-file');
    expect(error?.message).toContain(`has a backing file (${image})`);
    const extent = await importOnce(importer, { key: 'hostile', url: server.url('/hostile.vmdk') });
    expect(extent.error?.reason).toBe('backing-file');
    expect(extent.error?.message).toContain(`reads its data from another file (${image})`);
    expect(storeEntries(storeDir)).toEqual([]);
  });

  it('kills qemu-img info blocked on a vmdk extent that is a FIFO after --import-tool-timeout, failing the import and freeing its slot', async () => {
    const storeDir = path.join(work, 'fifo-store');
    const { importer } = testImporter(storeDir, { maxImports: 1, toolIdleMs: 1000 });
    const started = Date.now();
    const blocked = importer.start({ key: 'fifo', url: server.url('/fifo.vmdk') }, () => {});
    const stages: string[] = [];
    const queued = importer.start({ key: 'next', url: server.url('/disk.img') }, (p) => stages.push(p.stage));
    const qemuImgChildren = () =>
      runOrThrow('pgrep', ['-P', String(process.pid), '-x', 'qemu-img']).then(
        (out) => out.trim(),
        () => '',
      );
    await expect.poll(qemuImgChildren, { message: 'qemu-img info runs' }).not.toBe('');
    expect(stages).toEqual(['queued']);

    const failure = await Promise.race([
      blocked.done.then(
        () => null,
        (err: ImportError) => err,
      ),
      new Promise<string>((resolve) => setTimeout(() => resolve('still blocked after 10 s'), 10_000)),
    ]);
    expect(failure).toMatchObject({
      reason: 'tool-timeout',
      message: expect.stringMatching(
        /^qemu-img info read and wrote nothing for 1 s \(--import-tool-timeout\), so it was killed: the image makes it wait on something/,
      ),
    });
    console.log(`the FIFO vmdk failed after ${(Date.now() - started) / 1000} s: ${(failure as ImportError).message}`);
    expect(Date.now() - started).toBeLessThan(4000);
    expect(await qemuImgChildren()).toBe('');
    // Its slot went to the import waiting behind it.
    expect(sha256Of((await queued.done).file)).toBe(sha256Of(image));
    expect(storeEntries(storeDir).filter((name) => name.startsWith('.partial-'))).toEqual([]);
  });

  it('runs at most --max-imports at once; the rest wait as queued, and a queued one can be cancelled', async () => {
    const storeDir = path.join(work, 'queue-store');
    const { importer } = testImporter(storeDir, { maxImports: 2 });
    const progress: ImportProgress[][] = [[], [], [], []];
    const jobs = progress.map((seen, i) => importer.start({ key: `q${i}`, url: server.url('/held.img') }, (p) => seen.push(p)));
    await expect.poll(() => held.length).toBe(2);
    expect(progress.map((seen) => seen.at(-1)!.stage)).toEqual(['downloading', 'downloading', 'queued', 'queued']);

    jobs[3]!.cancel();
    await expect(jobs[3]!.done).rejects.toMatchObject({ reason: 'cancelled' });
    held.shift()!();
    await jobs[0]!.done;
    // The first to finish frees a place for the third; the cancelled fourth never runs.
    await expect.poll(() => held.length).toBe(2);
    expect(progress[2]!.at(-1)!.stage).toBe('downloading');
    held.splice(0).forEach((serve) => serve());
    const images = await Promise.all([jobs[1]!.done, jobs[2]!.done]);
    for (const imported of images) expect(sha256Of(imported.file)).toBe(sha256Of(image));
    expect(progress[3]!.map((p) => p.stage)).toEqual(['queued']);
    expect(server.hits.filter((hit) => hit === '/held.img')).toHaveLength(3);
  });

  it('reports progress at most about 4 times a second, with the total and a rate', async () => {
    const storeDir = path.join(work, 'progress-store');
    const big = makeTestImage(work, 'big.img', 64);
    const slow = await startImageServer({
      // 64 MiB in 1 MiB pieces, 20 ms apart: about 1.3 s of download.
      '/slow.img': (_req, res) => {
        const data = fs.readFileSync(big);
        res.writeHead(200, { 'content-length': data.length });
        let offset = 0;
        const timer = setInterval(() => {
          res.write(data.subarray(offset, offset + (1 << 20)));
          offset += 1 << 20;
          if (offset >= data.length) {
            clearInterval(timer);
            res.end();
          }
        }, 20);
      },
    });
    try {
      const { importer } = testImporter(storeDir);
      const reports: Array<ImportProgress & { at: number }> = [];
      const { done } = importer.start({ key: 'slow', url: slow.url('/slow.img') }, (p) => reports.push({ ...p, at: Date.now() }));
      expect(sha256Of((await done).file)).toBe(sha256Of(big));
      console.log(
        `${reports.length} progress reports:`,
        reports.map((p) => `${p.stage} ${p.bytes}/${p.totalBytes} ${p.bytesPerSecond}B/s`).join('; '),
      );
      for (let i = 1; i < reports.length; i++) {
        // Only a new stage may come sooner.
        if (reports[i]!.stage === reports[i - 1]!.stage) expect(reports[i]!.at - reports[i - 1]!.at).toBeGreaterThanOrEqual(240);
      }
      const downloading = reports.filter((p) => p.stage === 'downloading' && p.bytes > 0);
      expect(downloading.length).toBeGreaterThanOrEqual(3);
      expect(downloading.every((p) => p.totalBytes === 64 << 20)).toBe(true);
      expect(new Set(reports.map((p) => p.startedAt)).size, 'one start time').toBe(1);
      // The server paces evenly (less evenly under load): the reported rate is near the whole download's average.
      const average = (64 << 20) / ((reports.at(-1)!.at - reports.find((p) => p.stage === 'downloading')!.at) / 1000);
      const mid = downloading[Math.floor(downloading.length / 2)]!;
      expect(mid.bytesPerSecond).toBeGreaterThan(average / 2);
      expect(mid.bytesPerSecond).toBeLessThan(average * 2);
      expect(reports.at(-1)).toMatchObject({ stage: 'verifying', bytes: 64 << 20 });
    } finally {
      await slow.close();
    }
  });

  it('removeLeftovers removes the partial files a stopped run left, and nothing else', async () => {
    const storeDir = path.join(work, 'leftover-store');
    const { importer } = testImporter(storeDir);
    const kept = (await importOnce(importer, { key: 'kept', url: server.url('/disk.img') })).image!;
    fs.writeFileSync(path.join(storeDir, '.partial-disk-0a1b2c3d.raw'), 'half an image');
    fs.writeFileSync(path.join(storeDir, '.partial-disk-4e5f6a7b.download'), 'half a qcow2');
    // A new importer on the same store, as after a restart.
    const restarted = testImporter(storeDir).importer;
    expect(restarted.removeLeftovers().sort()).toEqual(['.partial-disk-0a1b2c3d.raw', '.partial-disk-4e5f6a7b.download']);
    expect(storeEntries(storeDir)).toEqual([path.basename(kept.file)]);
    expect(restarted.removeLeftovers()).toEqual([]);
  });
});
