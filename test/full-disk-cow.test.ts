import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, nbdsh, readExport, sha256, startSlowReader } from '../testkit/nbd.js';
import { fillUp, isRoot, mountTmpfs, unmountTmpfs } from './helpers/tmpfs.js';
import { trpcClient } from './helpers/trpc.js';

if (!isRoot) console.warn('full-disk cow tests skipped: mounting a small tmpfs as the data dir needs root (CI runs as root)');

const imageBytes = 2 * 1024 * 1024;

/**
 * A machine writing its whole cow export, 64 KiB at a time, then reading every block back: prints
 * how many writes failed and how many blocks read back as written. Errors are caught, so it shows
 * what the connection saw rather than dying at the first.
 */
const writeEverything = `
block = b"w" * 65536
failed = 0
for off in range(0, ${imageBytes}, 65536):
    try:
        h.pwrite(block, off)
    except Exception as err:
        failed += 1
        last = str(err)
print("failed", failed, flush=True)
intact = 0
try:
    for off in range(0, ${imageBytes}, 65536):
        intact += h.pread(65536, off) == block
except Exception as err:
    print("read error", err, flush=True)
print("intact", intact, flush=True)
`;

function everythingIn(dataDir: string): { integrity: unknown; exports: unknown[]; events: unknown[] } {
  const db = new Database(path.join(dataDir, 'state.db'), { readonly: true });
  try {
    return {
      integrity: db.pragma('integrity_check', { simple: true }),
      exports: db.prepare('SELECT * FROM exports ORDER BY id').all(),
      events: db.prepare('SELECT * FROM events ORDER BY id').all(),
    };
  } finally {
    db.close();
  }
}

describe.skipIf(!isRoot)('copy-on-write diffs on a data dir that fills up', () => {
  let mount: string;
  let dataDir: string;
  let daemon: RunningDaemon;
  beforeAll(() => {
    mount = mountTmpfs('4m');
    dataDir = path.join(mount, 'data');
  });
  afterAll(() => {
    killEverything(daemon ? [dataDir] : []);
    unmountTmpfs(mount);
  });

  it("fail that connection's writes only, corrupt nothing stored, and work again once space is freed", async () => {
    daemon = await startDaemon({ dataDir });
    const images = tempDir('nbdmux-images-');
    const image = makeImage(images, 'disk.img', imageBytes);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image, cow: true })).status).toBe(201);
    expect((await api(daemon, 'POST', '/exports', { name: 'plain', file: image })).status).toBe(201);
    const reader = startSlowReader(daemon.nbdUri('disk'), path.join(images, 'stop-reader'));
    await reader.connected;
    const stored = everythingIn(dataDir);

    const filler = path.join(mount, 'filler');
    fillUp(filler);
    const writer = await nbdsh(['-u', daemon.nbdUri('disk'), '-c', writeEverything]);
    console.log('writer on a full data dir:', writer.stdout.toString().trim().replace(/\n/g, '; '), writer.stderr.trim());
    const failedWrites = Number(/failed (\d+)/.exec(writer.stdout.toString())?.[1]);
    expect(failedWrites, 'the diff cannot hold the whole image').toBeGreaterThan(0);

    // The other connection of the same export reads exact bytes throughout, and the daemon lives.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(daemon.child.exitCode).toBeNull();
    const health = await api(daemon, 'GET', '/healthz');
    expect(health.status).toBe(503);
    expect(health.text).toContain(`the data dir ${dataDir} is full`);
    const refused = await api(daemon, 'POST', '/exports', { name: 'third', file: image });
    expect(refused.status).toBe(503);
    expect(refused.json.error.message).toBe(`the data dir ${dataDir} is full, so nothing was changed: free space there, then try again`);
    expect(sha256(await readExport(daemon.nbdUri('plain')))).toBe(sha256(image));

    fs.rmSync(filler);
    const read = await reader.finish();
    expect(read).toMatchObject({ code: 0, sha256: sha256(image) });
    await waitFor('health to clear', async () => ((await api(daemon, 'GET', '/healthz')).status === 200 ? true : undefined), 10_000);

    // Nothing stored before is lost or changed.
    const after = everythingIn(dataDir);
    expect(after.integrity).toBe('ok');
    expect(after.exports.slice(0, stored.exports.length)).toEqual(stored.exports);
    expect(after.events.slice(0, stored.events.length)).toEqual(stored.events);

    // Space is back: a new connection writes its whole diff, and changes are taken again.
    const rewriter = await nbdsh(['-u', daemon.nbdUri('disk'), '-c', writeEverything]);
    expect(rewriter.stdout.toString()).toMatch(/failed 0\n[^]*intact 32\n/);
    expect((await api(daemon, 'POST', '/exports', { name: 'third', file: image })).status).toBe(201);
    expect(sha256(await readExport(daemon.nbdUri('disk')))).toBe(sha256(image));
    await waitFor('every connection to be closed', async () =>
      (await trpcClient(daemon.url).connections.list.query({ live: true })).length === 0 ? true : undefined,
    );
    expect(await daemon.stop()).toBe(0);
  }, 90_000);
});
