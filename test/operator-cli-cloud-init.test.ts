import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient, type NbdmuxClient } from '../src/client.js';
import { killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { runText } from '../testkit/process.js';

const cli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));
const mac = '52:54:00:12:34:58';

/** `--user-data FILE` and its kin on `profiles add/set` and `machines set`, run as an operator would, against a real daemon. */
describe('the operator CLI with cloud-init documents', () => {
  let daemon: RunningDaemon;
  let client: NbdmuxClient;
  const dir = tempDir('nbdmux-cli-cloud-init-');
  const file = (name: string, text: string) => {
    const at = path.join(dir, name);
    fs.writeFileSync(at, text);
    return at;
  };

  beforeAll(async () => {
    daemon = await startDaemon();
    client = createNbdmuxClient({ url: daemon.url });
  });
  afterAll(() => {
    killEverything([daemon.dataDir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const nbdmux = (args: string[]) => {
    const { NBDMUX_ADMIN_PASSWORD: _password, ...env } = process.env;
    return runText(process.execPath, [cli, ...args], { env: { ...env, NBDMUX_URL: daemon.url }, timeoutMs: 20_000 });
  };

  it('stores a profile and a machine document from a file, unsets one, and refuses a bad one or a missing file clearly', async () => {
    const userData = '## template: jinja\n#cloud-config\nruncmd:\n  - echo {{ v1.local_hostname }} > /dev/console\n';
    expect(await nbdmux(['profiles', 'add', 'rack3', '--user-data', file('rack.yaml', userData)])).toMatchObject({ code: 0 });
    expect((await client.profiles.get.query({ name: 'rack3' })).userData).toBe(userData);

    const network = 'network:\n  version: 2\n';
    expect(await nbdmux(['profiles', 'set', 'rack3', '--network-config', file('net.yaml', network)])).toMatchObject({ code: 0 });
    expect(await client.profiles.get.query({ name: 'rack3' })).toMatchObject({ userData, networkConfig: network });
    expect(await nbdmux(['profiles', 'set', 'rack3', '--unset', 'network-config'])).toMatchObject({ code: 0 });
    expect((await client.profiles.get.query({ name: 'rack3' })).networkConfig).toBeNull();

    expect(await nbdmux(['machines', 'add', mac, 'node-8', '--profile', 'rack3'])).toMatchObject({ code: 0 });
    const own = '#cloud-config\nhostname: own\n';
    expect(await nbdmux(['machines', 'set', mac, '--user-data', file('own.yaml', own)])).toMatchObject({ code: 0 });
    expect((await client.machines.get.query({ mac })).userData).toBe(own);

    // The daemon's own check, with the line at fault; nothing changes.
    const bad = await nbdmux(['profiles', 'set', 'rack3', '--user-data', file('bad.yaml', '#cloud-config\nruncmd: [\n  - a\n: b\n')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/userData: .*line \d+/);
    expect((await client.profiles.get.query({ name: 'rack3' })).userData).toBe(userData);

    const missing = await nbdmux(['profiles', 'set', 'rack3', '--vendor-data', path.join(dir, 'nope.yaml')]);
    expect(missing).toMatchObject({ code: 2, stdout: '' });
    expect(missing.stderr).toContain(`--vendor-data ${path.join(dir, 'nope.yaml')}: cannot read it (ENOENT)`);
  });
});
