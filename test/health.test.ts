import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor } from '../testkit/daemon.js';
import { makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

const passThrough = `#!/bin/sh\nexec nbd-server "$@"\n`;

/**
 * A wrapper around the real nbd-server that the test can break at a chosen moment: the only way
 * to show nbd-server failing while the daemon runs. It answers -V truthfully, so only serving
 * fails.
 */
const failingToServe = `#!/bin/sh\n[ "$1" = -V ] && exec nbd-server -V\necho "Error: simulated start-up failure" >&2\nexit 1\n`;

describe('/healthz and nbd-server failures', () => {
  const dataDirs: string[] = [];
  afterEach(() => killEverything(dataDirs.splice(0)));

  async function daemonWithWrapper() {
    const dir = tempDir('nbdmux-bin-');
    const bin = path.join(dir, 'nbd-server');
    fs.writeFileSync(bin, passThrough, { mode: 0o755 });
    const daemon = await startDaemon({ args: ['--nbd-server-bin', bin] });
    dataDirs.push(daemon.dataDir);
    const image = makeImage(dir, 'disk.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image })).status).toBe(201);
    return { daemon, bin, image };
  }

  it('turns 503 with the reason when nbd-server keeps failing, records it, and recovers once it serves again', async () => {
    const { daemon, bin, image } = await daemonWithWrapper();
    expect((await api(daemon, 'GET', '/healthz')).status).toBe(200);

    fs.writeFileSync(bin, failingToServe);
    expect((await run('nbdinfo', [daemon.nbdUri('disk')])).code).not.toBe(0);
    // nbdinfo sees the failure as soon as the process closes its socket; the daemon handles the exit a moment later.
    const health = await waitFor('health to report the failed start', async () => {
      const answer = await api(daemon, 'GET', '/healthz');
      return answer.status === 200 ? undefined : answer;
    });
    expect(health.status).toBe(503);
    expect(health.text).toMatch(/simulated start-up failure/);
    const failures = (await trpcClient(daemon.url).events.list.query({ limit: 20 })).filter((e) => e.type === 'nbd-server.failed');
    expect(failures[0]?.details.reason).toMatch(/simulated start-up failure/);
    // The control plane stays up.
    expect((await api(daemon, 'GET', '/exports')).status).toBe(200);

    fs.writeFileSync(bin, passThrough);
    await waitFor('healthz to recover', async () => ((await api(daemon, 'GET', '/healthz')).status === 200 ? true : undefined));
    expect(sha256(await readExport(daemon.nbdUri('disk')))).toBe(sha256(image));
  });

  it('turns 503 when the nbd-server binary can no longer be run', async () => {
    const { daemon, bin } = await daemonWithWrapper();
    fs.chmodSync(bin, 0o644);
    await waitFor('healthz to notice', async () => {
      const health = await api(daemon, 'GET', '/healthz');
      return health.status === 503 ? health : undefined;
    }).then((health) => expect(health.text).toMatch(/not executable/));
    const result = await trpcClient(daemon.url).system.health.query();
    expect(result).toMatchObject({ ok: false, nbdListening: true });

    fs.chmodSync(bin, 0o755);
    await waitFor('healthz to recover', async () => ((await api(daemon, 'GET', '/healthz')).status === 200 ? true : undefined));
  });
});
