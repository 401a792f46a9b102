import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { killEverything, startDaemon, tempDir } from '../testkit/daemon.js';
import { makeImage, startNbdshSession } from '../testkit/nbd.js';

const password = 'correct horse battery staple';
const bearer = { authorization: `Bearer ${password}` };
/** Starts the daemon as a shell with the common umask 022 would, outside systemd. */
const underUmask022 = ['sh', '-c', 'umask 022 && exec "$@"', 'sh'];

/** Every path in `dir` (itself included) whose mode lets its group or others in at all, with that mode. */
function notPrivate(dir: string): string[] {
  const open: string[] = [];
  const visit = (file: string) => {
    const stat = fs.lstatSync(file);
    if ((stat.mode & 0o077) !== 0) open.push(`${path.relative(dir, file) || '.'} ${(stat.mode & 0o777).toString(8)}`);
    if (stat.isDirectory()) for (const entry of fs.readdirSync(file)) visit(path.join(file, entry));
  };
  visit(dir);
  return open;
}

function listed(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

describe('data dir modes', () => {
  const dataDirs: string[] = [];
  afterAll(() => killEverything(dataDirs));

  it('creates the data dir and every file in it private to the daemon user, under umask 022', async () => {
    const dataDir = path.join(tempDir(), 'data');
    const daemon = await startDaemon({ dataDir, wrapper: underUmask022, env: { NBDMUX_ADMIN_PASSWORD: password } });
    dataDirs.push(dataDir);
    const images = tempDir('nbdmux-images-');
    const image = makeImage(images, 'disk.img', 1024 * 1024);
    const created = await fetch(`${daemon.url}/exports`, {
      method: 'POST',
      headers: { ...bearer, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'disk', file: image, cow: true }),
    });
    expect(created.status).toBe(201);

    // A machine writing to the cow export, so that its diff exists while the modes are read.
    const stopFile = path.join(images, 'stop');
    const script = `
import os, time
h.pwrite(b"x" * 4096, 0)
print("written", flush=True)
while not os.path.exists(${JSON.stringify(stopFile)}):
    time.sleep(0.05)
`;
    const writer = startNbdshSession(daemon.nbdUri('disk'), script, 'written', stopFile);
    await writer.ready;
    const files = listed(dataDir);
    expect(files).toEqual(expect.arrayContaining(['state.db', 'state.db-wal', 'state.db-shm', 'nbd-server.conf', 'session-secret', 'cow']));
    expect(files.some((f) => f.startsWith('cow/') && f.endsWith('.diff'))).toBe(true);
    expect(notPrivate(dataDir)).toEqual([]);
    expect((await writer.finish()).code).toBe(0);
  });

  it('takes group and other access away from a data dir an older nbdmux left open', async () => {
    const dataDir = path.join(tempDir(), 'data');
    const first = await startDaemon({ dataDir });
    dataDirs.push(dataDir);
    expect(await first.stop()).toBe(0);
    // As an older nbdmux under umask 022 left it.
    fs.chmodSync(dataDir, 0o755);
    for (const file of listed(dataDir))
      fs.chmodSync(path.join(dataDir, file), fs.statSync(path.join(dataDir, file)).isDirectory() ? 0o755 : 0o644);
    expect(notPrivate(dataDir)).toContain('state.db 644');

    await startDaemon({ dataDir, wrapper: underUmask022 });
    expect(notPrivate(dataDir)).toEqual([]);
  });
});
