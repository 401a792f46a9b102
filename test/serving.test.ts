import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { listExports, makeImage, nbdsh, readExport } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';

describe('serving exports through the NBD port', () => {
  let daemon: RunningDaemon;
  let images: string;

  beforeAll(async () => {
    daemon = await startDaemon();
    images = tempDir('nbdmux-images-');
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('serves exactly the bytes of each image, several exports on one port', async () => {
    const alpha = makeImage(images, 'alpha.img', 8 * 1024 * 1024 + 512);
    const beta = makeImage(images, 'beta.img', 3 * 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'alpha', file: alpha })).status).toBe(201);
    expect((await api(daemon, 'POST', '/exports', { name: 'beta', file: beta })).status).toBe(201);

    const [alphaBytes, betaBytes] = await Promise.all([readExport(daemon.nbdUri('alpha')), readExport(daemon.nbdUri('beta'))]);
    expect(alphaBytes.equals(fs.readFileSync(alpha))).toBe(true);
    expect(betaBytes.equals(fs.readFileSync(beta))).toBe(true);
    expect((await listExports(daemon.nbdUri())).sort()).toEqual(['alpha', 'beta']);
  });

  it('reports each export with its size, mode, state and connection count', async () => {
    const { status, json } = await api(daemon, 'GET', '/exports/alpha');
    expect(status).toBe(200);
    expect(json).toMatchObject({
      name: 'alpha',
      file: path.join(fs.realpathSync(images), 'alpha.img'),
      readonly: true,
      size: 8 * 1024 * 1024 + 512,
      state: 'serving',
      connections: 0,
      removedAt: null,
    });
    expect(Date.parse(json.createdAt)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('refuses writes to a readonly export and leaves the image unchanged', async () => {
    const before = fs.readFileSync(path.join(images, 'alpha.img'));
    const result = await nbdsh(['-u', daemon.nbdUri('alpha'), '-c', 'h.pwrite(b"x" * 512, 0)']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/does not support write|Operation not permitted|read-only/i);
    expect(fs.readFileSync(path.join(images, 'alpha.img')).equals(before)).toBe(true);
  });

  it('lets a client write to an export registered with readonly false', async () => {
    const file = makeImage(images, 'rw.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'rw', file, readonly: false })).json.readonly).toBe(false);
    const result = await nbdsh(['-u', daemon.nbdUri('rw'), '-c', 'h.pwrite(b"nbdmux!!" * 64, 4096); h.flush() if h.can_flush() else None']);
    expect(result.stderr).toBe('');
    expect(
      fs
        .readFileSync(file)
        .subarray(4096, 4096 + 512)
        .toString(),
    ).toBe('nbdmux!!'.repeat(64));
  });

  it('tells two exports of one file apart in the connection records', async () => {
    const twin = path.join(images, 'alpha.img');
    expect((await api(daemon, 'POST', '/exports', { name: 'alpha-twin', file: twin })).status).toBe(201);
    expect((await run('nbdinfo', [daemon.nbdUri('alpha-twin')])).code).toBe(0);
    const db = await import('better-sqlite3').then((m) => new m.default(path.join(daemon.dataDir, 'state.db'), { readonly: true }));
    try {
      const last = db
        .prepare(
          `SELECT e.name AS name, c.outcome AS outcome, c.bytes_sent AS bytes FROM connections c JOIN exports e ON e.id = c.export_id ORDER BY c.id DESC LIMIT 1`,
        )
        .get() as { name: string; outcome: string; bytes: number } | undefined;
      // The close is recorded when the serving process ends, just after the client exits.
      expect(last?.name).toBe('alpha-twin');
    } finally {
      db.close();
    }
  });

  it('refuses an unknown export at negotiation', async () => {
    const result = await run('nbdinfo', [daemon.nbdUri('no-such-export')]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/No such file|export/);
  });

  it('answers /healthz with ok while it can serve', async () => {
    const { status, text } = await api(daemon, 'GET', '/healthz');
    expect([status, text]).toEqual([200, 'ok\n']);
  });
});
