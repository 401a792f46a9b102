import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../testkit/daemon.js';
import {
  importOnce,
  makeTestImage,
  pack,
  redirect,
  serveFile,
  serveStalled,
  serveTruncated,
  startImageServer,
  storeEntries,
  testImporter,
  type ImageServer,
  type Route,
} from '../testkit/image-fixtures.js';
import { freePort } from '../testkit/ports.js';
import { runOrThrow } from '../testkit/process.js';

/** Announces a megabyte, then sends one byte every 100 ms: never quiet long enough to look stalled. */
const trickle: Route = (_req, res) => {
  res.writeHead(200, { 'content-length': 1 << 20 });
  const timer = setInterval(() => res.write('x'), 100);
  res.on('close', () => clearInterval(timer));
};

/** Resolves with `promise`, or fails the test once `ms` have passed (the import would otherwise run for ever). */
function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(new Error(`still running after ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

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
      '/trickle.img': trickle,
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
    expect(
      server.hits.filter((hit) => hit.startsWith('/six/')),
      'the 6th redirect is not followed',
    ).toHaveLength(6);
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

  it('a source that trickles (its body or its response head) fails as too slow after one window, saying its rate and the minimum', async () => {
    // A byte every 100 ms, each in a header line that never ends: Node waits for the head's end up to 16 KiB.
    const slowHead = net.createServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nx-slow: ');
      const timer = setInterval(() => socket.write('x'), 100);
      socket.on('close', () => clearInterval(timer));
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => slowHead.listen(0, '127.0.0.1', resolve));
    try {
      const { importer } = testImporter(storeDir, { minRate: { bytes: 1024, windowMs: 1000 } });
      for (const url of [server.url('/trickle.img'), `http://127.0.0.1:${(slowHead.address() as net.AddressInfo).port}/disk.img`]) {
        const started = Date.now();
        const { error } = await within(10_000, importOnce(importer, { key: 'trickle', url }));
        expect(error?.reason, url).toBe('too-slow');
        expect(error?.message).toMatch(
          /^127\.0\.0\.1:\d+ sent \d+ B in the last 1 s the import waited on it, below the minimum 1\.0 KiB per 1 s \(--import-min-rate\): check the URL and the link/,
        );
        expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
        expect(Date.now() - started).toBeLessThan(3000);
      }
    } finally {
      slowHead.close();
    }
    noPartialFiles();
  });

  it('a fast source behind a slow import is not too slow: only the time spent waiting on it counts', async () => {
    // 1 GiB of zeros in 1 MB of gzip: inflating and writing it takes seconds, during which the
    // download (whole in the socket buffers) is read at a few hundred KB/s, far below this minimum.
    const zeros = path.join(work, 'zeros.img');
    await runOrThrow('sh', [
      '-c',
      'head -c 256M /dev/zero | gzip -9 > "$1.one" && cat "$1.one" "$1.one" "$1.one" "$1.one" > "$1.gz"',
      'pack',
      zeros,
    ]);
    const fast = await startImageServer({ '/zeros.img.gz': serveFile(`${zeros}.gz`) });
    try {
      const { importer } = testImporter(storeDir, { minRate: { bytes: 4 << 20, windowMs: 1000 } });
      const started = Date.now();
      const { error, image: imported } = await importOnce(importer, { key: 'zeros', url: fast.url('/zeros.img.gz') });
      expect(error).toBeUndefined();
      expect(imported?.size).toBe(1 << 30);
      const seconds = (Date.now() - started) / 1000;
      console.log(`1 MB of gzip became 1 GiB in ${seconds} s`);
      // What makes the case: a whole window passed, and over the import's wall time the source's bytes came slower than the minimum.
      expect(seconds).toBeGreaterThan(1);
      expect(fs.statSync(`${zeros}.gz`).size / seconds).toBeLessThan(4 << 20);
      fs.rmSync(imported!.file);
    } finally {
      await fast.close();
    }
  });

  it('a stalled import is cancelled at once, and nothing of it is left', async () => {
    const { importer } = testImporter(storeDir);
    const stages: string[] = [];
    const running = importer.start({ key: 'stall', url: server.url('/stalled.img.xz') }, (p) => stages.push(p.stage));
    await expect.poll(() => stages.at(-1)).toBe('decompressing');
    const xzChildren = () =>
      runOrThrow('pgrep', ['-P', String(process.pid), '-x', 'xz']).then(
        (out) => out.trim(),
        () => '',
      );
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
    await runOrThrow('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
    ]);
    const tls = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (_req, res) => res.end('never'));
    await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
    try {
      const untrusted = await importOnce(importer, {
        key: 'tls',
        url: `https://127.0.0.1:${(tls.address() as { port: number }).port}/disk.img`,
      });
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
