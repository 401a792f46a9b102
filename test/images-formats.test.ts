import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
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
} from '../testkit/image-fixtures.js';

/** A real HTTP server on 127.0.0.1 serves the test image in every shape a lab gets it; each import must give back its exact bytes. */
describe('importing an image in every shape it is published in', () => {
  let work: string;
  let storeDir: string;
  let image: string;
  let server: ImageServer;
  const packed: Record<string, string> = {};

  beforeAll(async () => {
    work = tempDir('nbdmux-images-');
    storeDir = path.join(work, 'store');
    image = makeTestImage(work, 'disk.img', 6);
    for (const as of ['xz', 'zst', 'gz', 'qcow2', 'vmdk', 'vhdx', 'vdi', 'qcow2.xz'] as const) packed[as] = await pack(image, as);
    server = await startImageServer({
      '/disk.img': serveFile(image),
      '/disk.img.xz': serveFile(packed.xz!),
      '/disk.img.zst': serveFile(packed.zst!, { contentLength: false }),
      '/disk.img.gz': serveFile(packed.gz!),
      '/disk.img.qcow2': serveFile(packed.qcow2!),
      '/disk.img.vmdk': serveFile(packed.vmdk!),
      '/disk.img.vhdx': serveFile(packed.vhdx!),
      '/disk.img.vdi': serveFile(packed.vdi!),
      '/disk.img.qcow2.xz': serveFile(packed['qcow2.xz']!),
      // The suffix lies: the bytes decide.
      '/misnamed.iso': serveFile(packed.xz!),
    });
  }, 60_000);
  afterAll(async () => {
    await server?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const shapes: Array<[string, string, string[]]> = [
    ['raw', '/disk.img', ['downloading', 'verifying']],
    ['xz', '/disk.img.xz', ['downloading', 'decompressing', 'verifying']],
    ['zstd, sent without a Content-Length', '/disk.img.zst', ['downloading', 'decompressing', 'verifying']],
    ['gzip', '/disk.img.gz', ['downloading', 'decompressing', 'verifying']],
    ['qcow2', '/disk.img.qcow2', ['downloading', 'verifying', 'converting']],
    ['vmdk', '/disk.img.vmdk', ['downloading', 'verifying', 'converting']],
    ['vhdx', '/disk.img.vhdx', ['downloading', 'verifying', 'converting']],
    ['vdi', '/disk.img.vdi', ['downloading', 'verifying', 'converting']],
    ['qcow2 inside xz', '/disk.img.qcow2.xz', ['downloading', 'decompressing', 'verifying', 'converting']],
    ['xz under a misleading name', '/misnamed.iso', ['downloading', 'decompressing', 'verifying']],
  ];
  it.each(shapes)('%s', async (_shape, route, stages) => {
    const { importer } = testImporter(storeDir);
    const served = route === '/misnamed.iso' ? packed.xz! : route === '/disk.img' ? image : packed[route.slice('/disk.img.'.length)]!;
    const outcome = await importOnce(importer, { key: 'disk', url: server.url(route), sha256: sha256Of(served) });
    expect(outcome.error).toBeUndefined();
    const imported = outcome.image!;
    expect(sha256Of(imported.file), 'the stored bytes are the original raw image').toBe(sha256Of(image));
    expect(imported.size).toBe(fs.statSync(image).size);
    expect(imported.sha256, 'the sha256 is of the downloaded bytes').toBe(sha256Of(served));
    expect(path.dirname(imported.file)).toBe(storeDir);
    expect(path.basename(imported.file)).toMatch(new RegExp(`^disk-${imported.sha256.slice(0, 12)}(-\\d+)?\\.img$`));
    expect(fs.statSync(imported.file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(storeDir).mode & 0o777).toBe(0o700);
    // A third of the image is zeros: stored as holes, whichever path wrote it.
    expect(fs.statSync(imported.file).blocks * 512).toBeLessThan(imported.size * 0.8);
    expect([...new Set(outcome.progress.map((p) => p.stage))]).toEqual(['queued', ...stages]);
    expect(
      storeEntries(storeDir).filter((name) => name.startsWith('.partial-')),
      'nothing partial is left',
    ).toEqual([]);
  });

  it('keeps the exact bytes of an image whose size is no multiple of 4 KiB, ending in zeros or in data', async () => {
    const random = fs.readFileSync(image).subarray(1 << 20, 2 << 20);
    const endsInZeros = path.join(work, 'ends-in-zeros.img');
    const endsInData = path.join(work, 'ends-in-data.img');
    fs.writeFileSync(endsInZeros, Buffer.concat([random.subarray(0, 123_457), Buffer.alloc((3 << 20) + 517)]));
    fs.writeFileSync(endsInData, Buffer.concat([Buffer.alloc((1 << 20) + 4096), random.subarray(0, 5000)]));
    const routes = {
      '/zeros.img': serveFile(endsInZeros),
      '/zeros.img.gz': serveFile(await pack(endsInZeros, 'gz')),
      '/data.img': serveFile(endsInData),
      '/data.img.gz': serveFile(await pack(endsInData, 'gz')),
    };
    const oddServer = await startImageServer(routes);
    try {
      const { importer } = testImporter(storeDir);
      for (const route of Object.keys(routes)) {
        const original = route.startsWith('/zeros') ? endsInZeros : endsInData;
        const imported = (await importOnce(importer, { key: 'odd', url: oddServer.url(route) })).image!;
        expect(imported.size, route).toBe(fs.statSync(original).size);
        expect(sha256Of(imported.file), route).toBe(sha256Of(original));
      }
    } finally {
      await oddServer.close();
    }
  });

  it('keeps each import under its own name: a second import of the same bytes overwrites nothing', async () => {
    const { importer } = testImporter(storeDir);
    const first = (await importOnce(importer, { key: 'twice', url: server.url('/disk.img') })).image!;
    const second = (await importOnce(importer, { key: 'twice', url: server.url('/disk.img') })).image!;
    expect(second.file).not.toBe(first.file);
    expect(sha256Of(first.file)).toBe(sha256Of(image));
    expect(sha256Of(second.file)).toBe(sha256Of(image));
  });

  it('reads a file:// URL under an image root, and refuses one that leads outside', async () => {
    const roots = [work];
    const { importer } = testImporter(storeDir, { imageRoots: roots });
    const local = await importOnce(importer, { key: 'local', url: pathToFileURL(packed.xz!).href });
    expect(local.error).toBeUndefined();
    expect(sha256Of(local.image!.file)).toBe(sha256Of(image));

    const outside = tempDir('nbdmux-outside-');
    const secret = makeTestImage(outside, 'secret.img', 1);
    // A symlink inside the root that leads out of it is judged by where it leads.
    fs.symlinkSync(secret, path.join(work, 'escape.img'));
    for (const url of [
      pathToFileURL(secret).href,
      pathToFileURL(path.join(work, 'escape.img')).href,
      `file://${work}/../${path.basename(outside)}/secret.img`,
    ]) {
      const refused = await importOnce(importer, { key: 'escape', url });
      expect(refused.error?.reason, url).toBe('outside-roots');
      expect(refused.error?.message).toContain('is outside the image roots');
    }
    const missing = await importOnce(importer, { key: 'missing', url: pathToFileURL(path.join(work, 'nope.img')).href });
    expect(missing.error?.reason).toBe('not-found');
    fs.rmSync(outside, { recursive: true });
  });
});
