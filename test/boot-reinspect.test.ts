import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { fakeBootImage, fakeKernelVersion, fakeKit } from './helpers/fake-kit.js';
import { startNbdshSession } from '../testkit/nbd.js';

const MiB = 1024 * 1024;

/**
 * A read-write export a machine keeps writing: every write changes the image's mtime, so the
 * image is no longer as inspected. Real daemon, real nbd-server, writes through NBD with nbdsh.
 */
describe('a read-write export that is being written', () => {
  const dir = tempDir('nbdmux-reinspect-');
  const dataDirs: string[] = [];
  let daemon: RunningDaemon;

  /** How many inspections the daemon has logged. */
  const inspections = () =>
    daemon
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{') && (JSON.parse(line) as { msg: string }).msg === 'image inspected for booting').length;
  const bootOf = async () => (await api(daemon, 'GET', '/exports/rw')).json.boot;

  beforeAll(async () => {
    const image = fakeBootImage(path.join(dir, 'rw.img'), {
      kernel: Buffer.from('the image kernel'),
      modules: { 'kernel/drivers/block/nbd.ko': 'nbd' },
      modulesDep: 'kernel/drivers/block/nbd.ko:\n',
      sizeMiB: 16,
    });
    // Room past the filesystem's end, where the writes go: the filesystem stays as it was.
    fs.truncateSync(image, 20 * MiB);
    daemon = await startDaemon({ args: ['--ramboot-kit', fakeKit(Buffer.from('the kit kernel'))] });
    dataDirs.push(daemon.dataDir);
    expect((await api(daemon, 'POST', '/exports', { name: 'rw', file: image, readonly: false })).status).toBe(201);
    await waitFor('rw inspected', async () => ((await bootOf()).reason === 'inspecting' ? undefined : true), 30_000);
  }, 60_000);
  afterAll(() => {
    killEverything(dataDirs);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is inspected again once the writes settle, not at every look, and boots as last inspected meanwhile', async () => {
    const inspected = {
      ready: true,
      os: null,
      kernel: fakeKernelVersion,
      partition: null,
      fstype: 'ext4',
      layout: 'disk ext4',
      lv: null,
      subvol: null,
      reason: null,
    };
    expect(await bootOf()).toEqual(inspected);
    expect(inspections()).toBe(1);

    // A 4 KiB write every 50 ms, 400 at most (20 s), until the stop file appears.
    const stopFile = path.join(dir, 'stop');
    const writer = startNbdshSession(
      daemon.nbdUri('rw'),
      [
        'import os, time',
        "print('writing', flush=True)",
        'i = 0',
        `while i < 400 and not os.path.exists(${JSON.stringify(stopFile)}):`,
        `    h.pwrite(bytes([i % 256]) * 4096, ${18 * MiB} + (i % 64) * 4096)`,
        '    i += 1',
        '    time.sleep(0.05)',
      ].join('\n'),
      'writing',
      stopFile,
    );
    await writer.ready;

    // Eight seconds of a machine asking for its script and an operator watching GET /exports, every 200 ms.
    const scripts: number[] = [];
    const boots: unknown[] = [];
    const until = Date.now() + 8000;
    while (Date.now() < until) {
      scripts.push((await api(daemon, 'GET', '/boot/rw.ipxe')).status);
      boots.push(await bootOf());
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const whileWritten = inspections();
    const stopped = Date.now();
    expect((await writer.finish()).code).toBe(0);
    // Settled: two stats 2 s apart find it the same, so within about 4 s of the last write.
    await waitFor('the image inspected again after the writes', () => (inspections() > whileWritten ? true : undefined), 15_000);
    const settledMs = Date.now() - stopped;
    await new Promise((resolve) => setTimeout(resolve, 3000));
    console.log(
      `boot-reinspect: ${scripts.length} script requests while written, ${whileWritten - 1} inspections then; inspected again ${settledMs} ms after the writes stopped`,
    );

    expect(new Set(scripts)).toEqual(new Set([200]));
    for (const boot of boots) expect(boot).toEqual(inspected);
    // Each of the ~40 looks found the image changed: none started an inspection while the writes went on.
    expect(whileWritten).toBe(1);
    expect(inspections()).toBe(2);
    expect(await bootOf()).toEqual(inspected);
  }, 60_000);
});
