import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { listExports, makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';
import { startRelay, type Relay } from './helpers/relay.js';

/**
 * An export with an allow list is hidden from every client outside it: not listed, and asked for
 * by name it is as unknown as a name never registered. Clients are told apart by source address
 * (127.0.0.1 directly, 127.0.0.2 through a relay), as the daemon sees them.
 */
describe('exports hidden from clients outside their allow list', () => {
  let daemon: RunningDaemon;
  let relay: Relay;
  let secretImage: string;
  let publicImage: string;
  const fromSecondClient = (name = '') => `nbd://127.0.0.1:${relay.port}/${name}`;

  beforeAll(async () => {
    daemon = await startDaemon();
    relay = await startRelay(daemon.nbdPort, '127.0.0.2');
    const images = tempDir('nbdmux-images-');
    secretImage = makeImage(images, 'secret.img', 1024 * 1024);
    publicImage = makeImage(images, 'public.img', 512 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'secret', file: secretImage, allow: ['127.0.0.2/32'] })).status).toBe(201);
    expect((await api(daemon, 'POST', '/exports', { name: 'public', file: publicImage })).status).toBe(201);
  });
  afterAll(async () => {
    await relay.close();
    killEverything([daemon.dataDir]);
  });

  it('lists only the export without a list to a client outside the secret one', async () => {
    expect(await listExports(daemon.nbdUri())).toEqual(['public']);
  });

  it('lists both to the client the secret export allows', async () => {
    expect((await listExports(fromSecondClient())).sort()).toEqual(['public', 'secret']);
  });

  it('answers a client outside the list exactly as for a name that was never registered', async () => {
    const secret = await run('nbdinfo', ['--json', daemon.nbdUri('secret')]);
    const unknown = await run('nbdinfo', ['--json', daemon.nbdUri('never-registered')]);
    expect(secret.code).not.toBe(0);
    expect(secret.code).toBe(unknown.code);
    expect(secret.stdout.toString()).toBe(unknown.stdout.toString());
    expect(secret.stderr.replaceAll('secret', 'NAME')).toBe(unknown.stderr.replaceAll('never-registered', 'NAME'));
  });

  it('serves the exact bytes to the client in the list, and the public export to both', async () => {
    expect(sha256(await readExport(fromSecondClient('secret')))).toBe(sha256(secretImage));
    expect(sha256(await readExport(fromSecondClient('public')))).toBe(sha256(publicImage));
    expect(sha256(await readExport(daemon.nbdUri('public')))).toBe(sha256(publicImage));
  });

  it('gives each group of clients its own config file, and all of them paths under DATA_DIR/nbd-server.conf', () => {
    // Processes read files named by their content; nbd-server.conf holds the full set for people.
    const configs = fs.readdirSync(daemon.dataDir).filter((name) => name.startsWith('nbd-server.conf.'));
    for (const name of configs) expect(name).toMatch(/^nbd-server\.conf\.[0-9a-f]{16}$/);
    const sectionsOf = (name: string) =>
      [...fs.readFileSync(path.join(daemon.dataDir, name), 'utf8').matchAll(/^\[([^\]]+)\]$/gm)].map((m) => m[1]!);
    const exportSets = configs.map((name) =>
      sectionsOf(name)
        .filter((section) => section !== 'generic' && !section.startsWith('__'))
        .join(','),
    );
    // The full set (127.0.0.2 sees everything), and the set 127.0.0.1 may see.
    expect(exportSets).toEqual(expect.arrayContaining(['public,secret', 'public']));
    expect(sectionsOf('nbd-server.conf')).toContain('secret');
  });
});
