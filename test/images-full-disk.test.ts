import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reservedBytes } from '../src/images/store.js';
import { tempDir } from '../testkit/daemon.js';
import { runOrThrow } from '../testkit/process.js';
import { isRoot, mountTmpfs, unmountTmpfs } from './helpers/tmpfs.js';
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
} from '../testkit/image-fixtures.js';

if (!isRoot) console.warn('image store full-disk tests skipped: mounting a small tmpfs as the image store needs root (CI runs as root)');

/**
 * The store is a 40 MiB tmpfs, of which the importer keeps 16 MiB free: room for 24 MiB. The
 * large image is 32 MiB with no zeros (zeros are stored as holes and would fit), half of it a
 * repeated byte, so its xz and compressed qcow2 forms (about 16 MiB) pass the check made from
 * their Content-Length and run out of room later.
 */
function makeLargeImage(dir: string): string {
  const file = path.join(dir, 'large.img');
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < 32; i++) fs.writeSync(fd, i % 2 === 0 ? crypto.randomBytes(1 << 20) : Buffer.alloc(1 << 20, 0x5a));
  fs.closeSync(fd);
  return file;
}

describe.skipIf(!isRoot)('an image larger than the free space of the image store', () => {
  let work: string;
  let mount: string;
  let server: ImageServer;
  let small: string;
  let large: string;

  beforeAll(async () => {
    work = tempDir('nbdmux-images-');
    mount = mountTmpfs('40m', 'nbdmux-store-tmpfs-');
    small = makeTestImage(work, 'small.img', 2);
    large = makeLargeImage(work);
    const compressedQcow2 = path.join(work, 'large-compressed.qcow2');
    await runOrThrow('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', large, compressedQcow2]);
    server = await startImageServer({
      '/small.img': serveFile(small),
      '/large.img': serveFile(large),
      '/large.img.xz': serveFile(await pack(large, 'xz')),
      '/large-chunked.img': serveFile(large, { contentLength: false }),
      '/large.img.qcow2': serveFile(compressedQcow2),
    });
  }, 60_000);
  afterAll(async () => {
    await server?.close();
    if (mount) unmountTmpfs(mount);
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('fails with no-space before or while writing, removes its partial file and harms nothing else', async () => {
    expect(reservedBytes).toBe(16 << 20);
    const storeDir = path.join(mount, 'images');
    const { importer } = testImporter(storeDir);
    const earlier = (await importOnce(importer, { key: 'earlier', url: server.url('/small.img') })).image!;

    const cases: Array<[string, RegExp]> = [
      // Content-Length says up front that it cannot fit.
      ['/large.img', /the download of .* needs 33554432 bytes but the image store .* has \d+ free/],
      // Sizes known only as the bytes come: seen while writing.
      ['/large.img.xz', /the image store .* is down to \d+ free bytes/],
      ['/large-chunked.img', /the image store .* is down to \d+ free bytes/],
      // The qcow2 lands, then its virtual size does not fit.
      ['/large.img.qcow2', /the qcow2 image's virtual size needs 33554432 bytes/],
    ];
    for (const [route, message] of cases) {
      const { error } = await importOnce(importer, { key: 'large', url: server.url(route) });
      expect(error?.reason, route).toBe('no-space');
      expect(error?.message).toMatch(message);
      expect(error?.message).toContain('free space there, then import again');
      expect(storeEntries(storeDir), `${route}: only the earlier image is left`).toEqual([path.basename(earlier.file)]);
    }
    expect(sha256Of(earlier.file)).toBe(sha256Of(small));
    // The space it took is back: the next import that fits works.
    const after = await importOnce(importer, { key: 'after', url: server.url('/small.img') });
    expect(after.error).toBeUndefined();
    expect(sha256Of(after.image!.file)).toBe(sha256Of(small));
  });
});
