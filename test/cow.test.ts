import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { renderNbdServerConfig } from '../src/supervisor/nbd-config.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, nbdsh, readExport, sha256, startNbdshSession } from '../testkit/nbd.js';
import { trpcClient } from './helpers/trpc.js';

const blockBytes = 64 * 1024;

interface Writer {
  /** Resolves once the client has written its block and read it back. */
  written: Promise<void>;
  /** Lets it read the block once more and exit; resolves with what it saw. */
  finish(): Promise<{ code: number | null; stillSees: boolean; stderr: string }>;
}

/**
 * A machine on a cow export: writes a block of `fill` bytes at `offset`, checks it reads back,
 * then stays connected until told to stop and checks once more. Its connection is what owns
 * the diff file.
 */
function startWriter(uri: string, stopFile: string, fill: string, offset: number): Writer {
  const script = `
import os, sys, time
block = b${JSON.stringify(fill)} * ${blockBytes}
h.pwrite(block, ${offset})
assert h.pread(${blockBytes}, ${offset}) == block
print("written", flush=True)
while not os.path.exists(${JSON.stringify(stopFile)}):
    time.sleep(0.05)
print("still", h.pread(${blockBytes}, ${offset}) == block, flush=True)
`;
  const session = startNbdshSession(uri, script, 'written', stopFile);
  return {
    written: session.ready,
    finish: async () => {
      const { code, stdout, stderr } = await session.finish();
      return { code, stillSees: stdout.includes('still True'), stderr };
    },
  };
}

const diffFiles = (daemon: RunningDaemon) => fs.readdirSync(path.join(daemon.dataDir, 'cow')).sort();

async function liveConnections(daemon: RunningDaemon) {
  return trpcClient(daemon.url).connections.list.query({ live: true });
}

describe('copy-on-write exports', () => {
  const dataDirs: string[] = [];
  afterEach(() => killEverything(dataDirs.splice(0)));

  async function daemonWithCowExport(): Promise<{ daemon: RunningDaemon; image: string; images: string; before: string }> {
    const daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    const images = tempDir('nbdmux-images-');
    const image = makeImage(images, 'disk.img', 4 * 1024 * 1024);
    fs.chmodSync(image, 0o444);
    const created = await api(daemon, 'POST', '/exports', { name: 'disk', file: image, cow: true });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ name: 'disk', cow: true, readonly: true });
    return { daemon, image, images, before: sha256(image) };
  }

  it('refuses cow with "readonly": false, saying why, and shows cow false by default', async () => {
    const daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    const image = makeImage(tempDir('nbdmux-images-'), 'disk.img', 1024 * 1024);
    const refused = await api(daemon, 'POST', '/exports', { name: 'disk', file: image, cow: true, readonly: false });
    expect(refused.status).toBe(400);
    expect(refused.json.error.issues).toEqual([
      { field: 'cow', message: expect.stringMatching(/never writes its image.*drop "readonly"/) },
    ]);
    const notBool = await api(daemon, 'POST', '/exports', { name: 'disk', file: image, cow: 'yes' });
    expect(notBool.json.error.issues).toEqual([{ field: 'cow', message: 'must be true or false' }]);

    const plain = await trpcClient(daemon.url).exports.create.mutate({ name: 'plain', file: image });
    expect(plain.cow).toBe(false);
  });

  it('gives each connection its own writable view, shows its diff size, and never writes the image', async () => {
    const { daemon, image, images, before } = await daemonWithCowExport();
    const writer = startWriter(daemon.nbdUri('disk'), path.join(images, 'stop-a'), 'A', 1024 * 1024);
    await writer.written;

    // A second machine on the same export sees the image, not the first one's write.
    const second = await nbdsh([
      '-u',
      daemon.nbdUri('disk'),
      '-c',
      `import sys; sys.stdout.buffer.write(h.pread(${blockBytes}, ${1024 * 1024}))`,
    ]);
    expect(second.code).toBe(0);
    expect(second.stdout.equals(fs.readFileSync(image).subarray(1024 * 1024, 1024 * 1024 + blockBytes))).toBe(true);
    // And a full read through a third connection is the image, byte for byte.
    expect(sha256(await readExport(daemon.nbdUri('disk')))).toBe(before);

    const [live] = await waitFor('the diff size in the connections list', async () => {
      const conns = await liveConnections(daemon);
      return conns.length === 1 && (conns[0]!.cowDiffBytes ?? 0) >= blockBytes ? conns : undefined;
    });
    // nbd-server names the diff <file>-<ip>-<pid>.diff after the file it opens, /proc/self/fd/4
    // (the pinned image's descriptor): the pid is the serving process.
    expect(diffFiles(daemon)).toEqual([`4-127.0.0.1-${live!.pid}.diff`]);

    const finished = await writer.finish();
    expect(finished).toMatchObject({ code: 0, stillSees: true });
    await waitFor('the diff to go with its connection', () => (diffFiles(daemon).length === 0 ? true : undefined));
    // The diff goes before the process exits, and the daemon records the exit a moment later.
    const closed = await waitFor('the connection to be recorded closed', async () =>
      (await trpcClient(daemon.url).connections.list.query({})).find((c) => c.id === live!.id && !c.live),
    );
    // The history keeps what it wrote; the two readers wrote nothing to theirs (an empty one, if seen).
    expect(closed).toMatchObject({ live: false, outcome: 'closed', cowDiffBytes: blockBytes });
    expect((await trpcClient(daemon.url).connections.list.query({})).filter((c) => (c.cowDiffBytes ?? 0) > 0)).toHaveLength(1);
    expect(sha256(image)).toBe(before);
  });

  it('reads back every page of many writes in flight at once (nbd-server 3.24 races them with more than one thread)', async () => {
    const { daemon, image, before } = await daemonWithCowExport();
    // 256 new pages written concurrently, each its own request, then every one read back.
    const script = `
import os
pages = [os.urandom(4096) for _ in range(256)]
for i, page in enumerate(pages):
    h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(page)), i * 8192)
while h.aio_in_flight() > 0:
    h.poll(-1)
wrong = [i for i, page in enumerate(pages) if h.pread(4096, i * 8192) != page]
print("wrong", len(wrong))
`;
    for (let round = 0; round < 3; round++) {
      const { code, stdout, stderr } = await nbdsh(['-u', daemon.nbdUri('disk'), '-c', script]);
      expect(code, stderr.toString()).toBe(0);
      expect(stdout.toString().trim()).toBe('wrong 0');
    }
    expect(sha256(image)).toBe(before);
  });

  it('removes the diff of a connection cut by a forced removal, and of one whose process was killed', async () => {
    const { daemon, image, images, before } = await daemonWithCowExport();
    const crashed = startWriter(daemon.nbdUri('disk'), path.join(images, 'stop-a'), 'C', 0);
    await crashed.written;
    const [conn] = await waitFor('the negotiated connection', async () => {
      const conns = await liveConnections(daemon);
      return conns[0]?.exportName === 'disk' ? conns : undefined;
    });
    expect(diffFiles(daemon)).toHaveLength(1);
    // nbd-server cannot clean up after a SIGKILL; nbdmux sees the process end and does.
    process.kill(conn!.pid!, 'SIGKILL');
    await waitFor('the killed process diff to be removed', () => (diffFiles(daemon).length === 0 ? true : undefined));
    expect((await crashed.finish()).code).not.toBe(0);

    const cut = startWriter(daemon.nbdUri('disk'), path.join(images, 'stop-b'), 'F', 0);
    await cut.written;
    await waitFor('the second connection', async () => ((await liveConnections(daemon))[0]?.exportName === 'disk' ? true : undefined));
    expect(diffFiles(daemon)).toHaveLength(1);
    expect((await api(daemon, 'DELETE', '/exports/disk?force=true')).status).toBe(204);
    expect(diffFiles(daemon)).toEqual([]);
    expect((await cut.finish()).code).not.toBe(0);
    expect(sha256(image)).toBe(before);
  });

  it('at restart removes diffs of processes killed while it was down, and keeps those of adopted connections', async () => {
    const { daemon, image, images, before } = await daemonWithCowExport();
    const survivor = startWriter(daemon.nbdUri('disk'), path.join(images, 'stop-survivor'), 'S', 0);
    const victim = startWriter(daemon.nbdUri('disk'), path.join(images, 'stop-victim'), 'V', 0);
    await Promise.all([survivor.written, victim.written]);
    const conns = await waitFor('both connections negotiated', async () => {
      const live = await liveConnections(daemon);
      return live.length === 2 && live.every((c) => c.exportName === 'disk') ? live : undefined;
    });
    expect(diffFiles(daemon)).toHaveLength(2);

    await daemon.stop('SIGKILL');
    const victimPid = victimServingPid(conns.map((c) => c.pid!));
    process.kill(victimPid, 'SIGKILL');
    expect((await victim.finish()).code).not.toBe(0);
    expect(diffFiles(daemon)).toHaveLength(2); // nobody cleaned up yet
    // A stand-in for a diff whose process nbdmux never recorded (it died between spawn and the
    // pid reaching the database): only the start-up sweep of the cow dir can find that one.
    const unrecorded = `old.img-127.0.0.1-${await exitedPid()}.diff`;
    fs.writeFileSync(path.join(daemon.dataDir, 'cow', unrecorded), 'x');

    const restarted = await startDaemon({ dataDir: daemon.dataDir });
    const survivorPid = conns.map((c) => c.pid!).find((pid) => pid !== victimPid)!;
    expect(diffFiles(restarted)).toEqual([`4-127.0.0.1-${survivorPid}.diff`]);
    // The adopted machine still reads its own write back from the diff that was kept.
    expect(await survivor.finish()).toMatchObject({ code: 0, stillSees: true });
    await waitFor('the survivor diff to go when it disconnects', () => (diffFiles(restarted).length === 0 ? true : undefined));
    expect(sha256(image)).toBe(before);
  });

  it('renders copyonwrite with the cow dir, never sparse_cow, and refuses a cow export without a safe cow dir', () => {
    const cowExport = { id: 3, versionId: 103, name: 'cow', file: '/srv/images/a.img', fd: 20, readonly: true, cow: true };
    const text = renderNbdServerConfig([cowExport], '/var/lib/nbdmux/cow');
    const section = text.slice(text.indexOf('[cow]'));
    expect(section).toMatch(/^readonly = false$/m);
    expect(section).toMatch(/^copyonwrite = true$/m);
    expect(section).toMatch(/^cowdir = \/var\/lib\/nbdmux\/cow$/m);
    expect(text).not.toContain('sparse_cow');
    // One request at a time where a cow export can be chosen; the others keep nbd-server's threads.
    expect(text.slice(0, text.indexOf('\n\n'))).toMatch(/^max_threads = 1$/m);
    expect(renderNbdServerConfig([{ ...cowExport, cow: false }], '/var/lib/nbdmux/cow')).not.toContain('max_threads');
    expect(() => renderNbdServerConfig([cowExport])).toThrow(/cow dir/);
    expect(() => renderNbdServerConfig([cowExport], '/data dir/cow')).toThrow(/cow dir/);
    // A data dir nbd-server would misread only matters once a cow export needs it.
    expect(() => renderNbdServerConfig([{ ...cowExport, cow: false }], '/data dir/cow')).not.toThrow();
  });
});

/** Which of the two serving processes the victim writer talks to: the one whose diff holds 'V'. */
function victimServingPid(pids: number[]): number {
  for (const pid of pids) {
    const diff = fs
      .readdirSync('/proc/' + pid + '/fd')
      .map((fd) => fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
      .find((target) => target.endsWith('.diff'));
    if (diff && fs.readFileSync(diff).subarray(0, 1).toString() === 'V') return pid;
  }
  throw new Error('no serving process holds the victim diff');
}

/** The pid of a process that has already exited. */
async function exitedPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((resolve) => child.on('close', resolve));
  return child.pid!;
}
