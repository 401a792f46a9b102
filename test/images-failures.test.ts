import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers/daemon.js';
import { importOnce, makeTestImage, pack, redirect, serveFile, serveStalled, serveTruncated, startImageServer, storeEntries, testImporter, type ImageServer } from './helpers/image-fixtures.js';
import { freePort } from './helpers/ports.js';
import { runOrThrow } from './helpers/process.js';

/** Every way a download goes wrong fails the import with its own reason and a message naming it, and leaves nothing in the store. */
describe('a download that goes wrong', () => {
  let work: string;
  let storeDir: string;
  let image: string;
  let xz: string;
  let server: ImageServer;

  beforeAll(async () => {
    work = tempDir('nbdmux-images-');
    storeDir = path.join(work, 'store');
    image = makeTestImage(work, 'disk.img', 4);
    xz = await pack(image, 'xz');
    const chain = (prefix: string, hops: number): Record<string, ReturnType<typeof redirect>> =>
      // Relative Locations: each must be resolved against the URL it came from.
      Object.fromEntries(Array.from({ length: hops }, (_, i) => [`/${prefix}/${i}`, redirect(i === hops - 1 ? '/disk.img' : `${i + 1}`)]));
    server = await startImageServer({
      '/disk.img': serveFile(image),
      '/truncated.img': serveTruncated(image, 1 << 20),
      '/truncated.img.xz': serveTruncated(xz, fs.statSync(xz).size >> 1),
      '/stalled.img': serveStalled(image, 64 * 1024),
      '/stalled.img.xz': serveStalled(xz, 64 * 1024),
      ...chain('three', 3),
      ...chain('five', 5),
      ...chain('six', 6),
      '/loop/a': redirect('/loop/b'),
      '/loop/b': redirect('/loop/a'),
      '/to-file': redirect(`file://${image}`),
    });
  }, 60_000);
  afterAll(async () => {
    await server?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const noPartialFiles = () => expect(storeEntries(storeDir).filter((name) => name.startsWith('.partial-'))).toEqual([]);

  it('a body cut short of its Content-Length is truncated, raw or inside xz', async () => {
    const { importer } = testImporter(storeDir);
    for (const route of ['/truncated.img', '/truncated.img.xz']) {
      const { error } = await importOnce(importer, { key: 'cut', url: server.url(route) });
      expect(error?.reason, route).toBe('truncated');
      expect(error?.message).toMatch(/the connection ended after \d+ bytes of the \d+ announced/);
    }
    noPartialFiles();
  });

  it('a 404 names the status and the URL', async () => {
    const { importer } = testImporter(storeDir);
    const { error } = await importOnce(importer, { key: 'gone', url: server.url('/nothing.img') });
    expect(error?.reason).toBe('http-status');
    expect(error?.message).toBe(`GET ${server.url('/nothing.img')} answered 404 Not Found`);
  });

  it('follows up to 5 redirects, and fails on a 6th or a loop', async () => {
    const { importer } = testImporter(storeDir);
    for (const route of ['/three/0', '/five/0']) {
      const { error, image: imported } = await importOnce(importer, { key: 'hops', url: server.url(route) });
      expect(error, route).toBeUndefined();
      expect(fs.readFileSync(imported!.file).equals(fs.readFileSync(image))).toBe(true);
    }
    const six = await importOnce(importer, { key: 'hops', url: server.url('/six/0') });
    expect(six.error?.reason).toBe('redirects');
    expect(six.error?.message).toContain('more than 5 redirects');
    expect(server.hits.filter((hit) => hit.startsWith('/six/')), 'the 6th redirect is not followed').toHaveLength(6);
    const loop = await importOnce(importer, { key: 'hops', url: server.url('/loop/a') });
    expect(loop.error?.reason).toBe('redirects');
    expect(loop.error?.message).toContain('a redirect loop');
    // A server must not reach the host's files through a redirect.
    const toFile = await importOnce(importer, { key: 'hops', url: server.url('/to-file') });
    expect(toFile.error?.reason).toBe('redirects');
    noPartialFiles();
  });

  it('a stalled server fails after the stall timeout, raw or inside xz', async () => {
    const { importer } = testImporter(storeDir, { stallTimeoutMs: 1000 });
    for (const route of ['/stalled.img', '/stalled.img.xz']) {
      const started = Date.now();
      const { error } = await importOnce(importer, { key: 'stall', url: server.url(route) });
      expect(error?.reason, route).toBe('stalled');
      expect(error?.message).toContain('sent nothing for 1 s');
      expect(Date.now() - started).toBeLessThan(5000);
    }
    noPartialFiles();
  });

  it('a stalled import is cancelled at once, and nothing of it is left', async () => {
    const { importer } = testImporter(storeDir);
    const stages: string[] = [];
    const running = importer.start({ key: 'stall', url: server.url('/stalled.img.xz') }, (p) => stages.push(p.stage));
    await expect.poll(() => stages.at(-1)).toBe('decompressing');
    const xzChildren = () => runOrThrow('pgrep', ['-P', String(process.pid), '-x', 'xz']).then((out) => out.trim(), () => '');
    expect(await xzChildren(), 'xz runs while the import does').not.toBe('');
    const cancelledAt = Date.now();
    running.cancel();
    await expect(running.done).rejects.toMatchObject({ reason: 'cancelled', message: 'the import was cancelled' });
    expect(Date.now() - cancelledAt).toBeLessThan(2000);
    await expect.poll(xzChildren, { message: 'the xz child is killed' }).toBe('');
    noPartialFiles();
  });

  it('DNS, a refused connection and an untrusted certificate each say so', async () => {
    const { importer } = testImporter(storeDir);
    const dns = await importOnce(importer, { key: 'dns', url: 'http://no-such-host.invalid/disk.img' });
    expect(dns.error?.reason).toBe('dns');
    expect(dns.error?.message).toContain('no-such-host.invalid: no such host');
    const refused = await importOnce(importer, { key: 'refused', url: `http://127.0.0.1:${await freePort()}/disk.img` });
    expect(refused.error?.reason).toBe('refused');
    expect(refused.error?.message).toContain('refused the connection');

    const key = path.join(work, 'key.pem');
    const cert = path.join(work, 'cert.pem');
    await runOrThrow('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1']);
    const tls = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (_req, res) => res.end('never'));
    await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
    try {
      const untrusted = await importOnce(importer, { key: 'tls', url: `https://127.0.0.1:${(tls.address() as { port: number }).port}/disk.img` });
      expect(untrusted.error?.reason).toBe('tls');
      expect(untrusted.error?.message).toContain('TLS failed (DEPTH_ZERO_SELF_SIGNED_CERT)');
    } finally {
      tls.close();
    }
  });

  it('refuses URLs it cannot import', async () => {
    const { importer } = testImporter(storeDir);
    expect((await importOnce(importer, { key: 'x', url: 'ftp://example.org/disk.img' })).error?.reason).toBe('bad-url');
    expect((await importOnce(importer, { key: 'x', url: 'not a url' })).error?.reason).toBe('bad-url');
  });
});
