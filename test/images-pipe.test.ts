import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sha256Worker } from '../src/images/sha256-worker.js';
import { tempDir, waitFor } from '../testkit/daemon.js';
import {
  importOnce,
  pack,
  serveFile,
  serveStalled,
  startImageServer,
  storeEntries,
  testImporter,
  type ImageServer,
} from '../testkit/image-fixtures.js';
import { allPids, parentPid, processRuns } from '../testkit/proc.js';
import { runOrThrow } from '../testkit/process.js';

/** This process's children running `comm` (the kernel cuts names to 15 characters). */
function childrenNamed(comm: string): number[] {
  return allPids().filter((pid) => {
    if (parentPid(pid) !== process.pid || !processRuns(pid)) return false;
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm.slice(0, 15);
    } catch {
      return false;
    }
  });
}

function fdLinks(pid: number | 'self'): string[] {
  return fs.readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
    try {
      return [fs.readlinkSync(`/proc/${pid}/fd/${fd}`)];
    } catch {
      return [];
    }
  });
}

/**
 * 4 KiB blocks of data and of zeros in an irregular order (single zero blocks between data too),
 * and a short tail of data: the store must keep every byte, and every zero block as a hole.
 */
function makeBlockImage(file: string): { dataBytes: number } {
  const blocks = Array.from({ length: 600 }, (_, i) => i % 3 === 1 || i % 7 === 0 || (i >= 300 && i < 420));
  const tail = crypto.randomBytes(1000);
  fs.writeFileSync(file, Buffer.concat([...blocks.map((zero) => (zero ? Buffer.alloc(4096) : crypto.randomBytes(4096))), tail]));
  return { dataBytes: blocks.filter((zero) => !zero).length * 4096 + 4096 };
}

describe('imports through the native pipe', () => {
  let work: string;
  let server: ImageServer;
  let image: string;
  let dataBytes: number;
  let xz: string;

  beforeAll(async () => {
    work = tempDir('nbdmux-pipe-');
    image = path.join(work, 'blocks.img');
    ({ dataBytes } = makeBlockImage(image));
    xz = await pack(image, 'xz');
    server = await startImageServer({ '/blocks.img.xz': serveFile(xz), '/stalled.img.xz': serveStalled(xz, 64 << 10) });
  });
  afterAll(async () => {
    await server?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('keeps every byte, each zero 4 KiB block as a hole, and records the sha256 that sha256sum gives the download', async () => {
    const { importer } = testImporter(path.join(work, 'store'));
    const { image: imported, error } = await importOnce(importer, { key: 'blocks', url: server.url('/blocks.img.xz') });
    expect(error).toBeUndefined();
    expect(fs.readFileSync(imported!.file).equals(fs.readFileSync(image))).toBe(true);
    // The last block is partial: the file system allocates it whole. It may add a block or two of its own (ext4 counts
    // an extent tree's blocks); a zero block written as data would add 4 KiB each, and about 200 stand alone here.
    const allocated = fs.statSync(imported!.file).blocks * 512;
    expect(allocated).toBeGreaterThanOrEqual(dataBytes);
    expect(allocated).toBeLessThanOrEqual(dataBytes + (16 << 10));
    expect(imported!.sha256).toBe((await runOrThrow('sha256sum', [xz])).split(' ')[0]);
    expect(fs.statSync(imported!.file).mode & 0o777).toBe(0o600);
  });

  it('pipes the decompressor straight into the sparse writer, and a cancel ends both at once', async () => {
    const storeDir = path.join(work, 'store-stalled');
    const { importer } = testImporter(storeDir);
    const { done, cancel } = importer.start({ key: 'stalled', url: server.url('/stalled.img.xz') }, () => {});
    const failed = done.catch((err: unknown) => err as { reason: string });
    const [decompressor, writer] = await waitFor(
      'xz and nbdmux-sparse-write to run',
      () => {
        const found = [childrenNamed('xz'), childrenNamed('nbdmux-sparse-write')];
        return found.every((pids) => pids.length === 1) ? found.map((pids) => pids[0]!) : undefined;
      },
      10_000,
    );
    // libuv makes a child's stdio from a socketpair: xz's stdout is one end, the writer's stdin its peer.
    const ends = [fs.readlinkSync(`/proc/${decompressor}/fd/1`), fs.readlinkSync(`/proc/${writer}/fd/0`)];
    const inodes = ends.map((end) => /^socket:\[(\d+)\]$/.exec(end)?.[1]);
    const pairs = (await runOrThrow('ss', ['-xn'])).split('\n').map((line) => line.split(/\s+/).filter((field) => /^\d+$/.test(field)));
    expect(
      pairs.some((pair) => pair.includes(inodes[0]!) && pair.includes(inodes[1]!)),
      `${ends.join(' and ')} are peers`,
    ).toBe(true);
    // Neither end stays here: the writer sees its end when xz ends, and no byte is read by nbdmux.
    expect(fdLinks('self').filter((link) => ends.includes(link))).toEqual([]);

    cancel();
    expect(await failed).toMatchObject({ reason: 'cancelled' });
    await waitFor(
      'no child left',
      () => (childrenNamed('xz').length + childrenNamed('nbdmux-sparse-write').length === 0 ? true : undefined),
      1000,
      10,
    );
    expect(storeEntries(storeDir)).toEqual([]);
  });
});

describe('the sha256 worker', () => {
  const chunks = Array.from({ length: 40 }, () => crypto.randomBytes(1 << 20));

  it('gives the digest of every chunk, in order, past its queue bound (16 MiB)', async () => {
    const worker = new Sha256Worker();
    for (const chunk of chunks) await worker.update(chunk);
    const expected = chunks.reduce((hash, chunk) => hash.update(chunk), crypto.createHash('sha256')).digest('hex');
    expect(await worker.digest()).toBe(expected);
  });

  it('keeps the order of chunks of any size handed over at once, across its 1 MiB slots, each copied when taken', async () => {
    const worker = new Sha256Worker();
    const sizes = [1, 65_536, 1_048_575, 3 << 20, 0, 4097, 1 << 20, 17];
    const pieces = sizes.map((size) => crypto.randomBytes(size));
    const expected = pieces.reduce((hash, piece) => hash.update(piece), crypto.createHash('sha256')).digest('hex');
    // Not awaited one by one: the daemon awaits each, but the order must not depend on it.
    await Promise.all(pieces.map((piece) => worker.update(piece)));
    for (const piece of pieces) piece.fill(0xff);
    expect(await worker.digest()).toBe(expected);
  });

  it('stops at once with work still queued, releasing a waiting update', async () => {
    const worker = new Sha256Worker();
    const updates = chunks.map((chunk) => worker.update(chunk));
    await worker.stop();
    await Promise.all(updates);
  });
});

describe('nbdmux-sparse-write', () => {
  const writer = fileURLToPath(new URL('../dist/native/nbdmux-sparse-write', import.meta.url));
  const input = Buffer.concat([crypto.randomBytes(3 << 20), Buffer.alloc(1 << 20), crypto.randomBytes(5000)]);

  /** The writer's fsync calls, seen by strace, and the file it wrote. */
  function write(sync: string): { status: number | null; stderr: string; fsyncs: number; written: Buffer | null } {
    const dir = tempDir('nbdmux-writer-');
    try {
      const out = path.join(dir, 'out.img');
      const trace = path.join(dir, 'trace');
      const result = spawnSync('strace', ['-f', '-e', 'trace=fsync,fdatasync,syncfs,sync', '-o', trace, writer, out, '512', '0', sync], {
        input,
      });
      const fsyncs = fs
        .readFileSync(trace, 'utf8')
        .split('\n')
        .filter((line) => /\b(fsync|fdatasync|syncfs|sync)\(/.test(line)).length;
      return { status: result.status, stderr: result.stderr.toString(), fsyncs, written: fs.existsSync(out) ? fs.readFileSync(out) : null };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  it('syncs the image it lands, and not a download only qemu-img reads (no-sync); both hold every byte', () => {
    const durable = write('sync');
    expect(durable).toMatchObject({ status: 0, fsyncs: 1 });
    expect(durable.written?.equals(input)).toBe(true);
    const temporary = write('no-sync');
    expect(temporary).toMatchObject({ status: 0, fsyncs: 0 });
    expect(temporary.written?.equals(input)).toBe(true);
  });

  it('refuses a command line without the sync word, writing nothing', () => {
    const result = write('maybe');
    expect(result).toMatchObject({ status: 2, written: null });
    expect(result.stderr).toMatch(/usage: .* sync\|no-sync/);
  });
});
