import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { runText } from '../testkit/process.js';
import { fakeKit } from './helpers/fake-kit.js';

const cli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));

const [first, second] = ['52:54:00:00:03:02', '52:54:00:00:03:01'];

/**
 * The walkthrough of docs/profiles.md against the real daemon, by the CLI and curl's routes: two
 * machines ask to boot, are adopted into a profile, the profile gets an export and kernel
 * arguments, and each machine's boot script boots them.
 */
describe('profiles through the daemon', () => {
  let daemon: RunningDaemon;

  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--ramboot-kit', fakeKit(Buffer.from('kernel')), '--nbd-public-port', '10809'] });
    const images = tempDir('nbdmux-images-');
    for (const name of ['debian', 'alpine'])
      expect((await api(daemon, 'POST', '/exports', { name, file: makeImage(images, `${name}.img`, 1024 * 1024) })).status).toBe(201);
    await inspectedBoots(daemon);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  const nbdmux = (args: string[]) => {
    const { NBDMUX_ADMIN_PASSWORD: _password, ...env } = process.env;
    return runText(process.execPath, [cli, ...args], { env: { ...env, NBDMUX_URL: daemon.url }, timeoutMs: 20_000 });
  };
  const script = async (mac: string) => {
    const reply = await fetch(`${daemon.url}/boot.ipxe?mac=${mac}`);
    expect(reply.status).toBe(200);
    return reply.text();
  };

  it('adopts two discovered machines into a profile, gives it an export, and their scripts boot it', async () => {
    // Two unknown machines ask to boot: `first` before `second`, though its MAC sorts after.
    for (const mac of [first, second]) {
      expect(await script(mac)).toContain('menu nbdmux: choose an export'); // unknown: the menu, and discovered
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(await nbdmux(['profiles', 'add', 'rack3'])).toMatchObject({ code: 0, stderr: '' });
    expect(await nbdmux(['profiles', 'adopt', 'rack3', '--names', 'rack3-node{01..40}'])).toMatchObject({
      code: 0,
      stdout: `adopted ${first} as rack3-node01\nadopted ${second} as rack3-node02\n`,
    });
    // In the profile, with no export yet: the console says what to do.
    expect(await script(first)).toContain('no export is set for it');

    const set = await nbdmux(['profiles', 'set', 'rack3', '--export', 'debian', '--cmdline', 'quiet']);
    expect(set).toMatchObject({ code: 0, stderr: '' });
    expect(set.stdout).toMatch(
      /^updated profile rack3: its machines get it at their next boot\n(.*\n)*export +debian\nkernel args +quiet\n/,
    );
    expect(set.stdout).toMatch(/\nmachines +rack3-node01 \(52:54:00:00:03:02\)\n +rack3-node02 \(52:54:00:00:03:01\)\n/);
    for (const [mac, name] of [
      [first, 'rack3-node01'],
      [second, 'rack3-node02'],
    ] as const) {
      const text = await script(mac);
      expect(text).toContain('/boot/debian/vmlinuz');
      expect(text).toMatch(new RegExp(`^kernel .* systemd\\.hostname=${name} .* console=ttyS0,115200 quiet$`, 'm'));
    }

    // One machine sets its own export: it wins; the view says where each value came from.
    expect((await nbdmux(['machines', 'set', second, '--export', 'alpine'])).code).toBe(0);
    expect(await script(second)).toContain('/boot/alpine/vmlinuz');
    const shown = await nbdmux(['machines', 'show', second]);
    expect(shown.stdout).toMatch(
      /\nprofile +rack3\nexport +alpine \(its own\)\nkernel args +quiet \(from profile rack3\)\npersistent +no: each boot starts from the image \(the default\)\n/,
    );
    // The profile's export for all its machines: their own is cleared.
    expect((await nbdmux(['profiles', 'set', 'rack3', '--export', 'alpine', '--all-machines'])).code).toBe(0);
    const machines = (await api(daemon, 'GET', '/machines')).json as Array<{ export: string; sources: { export: string } }>;
    expect(machines.map((m) => [m.export, m.sources.export])).toEqual([
      ['alpine', 'profile'],
      ['alpine', 'profile'],
    ]);
    expect(await script(first)).toContain('/boot/alpine/vmlinuz');
  });

  it('refuses what the rules refuse, with hints naming the CLI’s commands', async () => {
    expect(await nbdmux(['machines', 'set', first, '--profile', 'nope'])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('profile: no profile "nope"; "nbdmux profiles" lists them'),
    });
    expect(await nbdmux(['profiles', 'rm', 'rack3'])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining(
        `profile rack3 is used by rack3-node01 (${first}), rack3-node02 (${second}); take each out of it with "nbdmux machines set ${first} --no-profile", "nbdmux machines set ${second} --no-profile"`,
      ),
    });
    expect(await nbdmux(['profiles', 'adopt', 'rack3'])).toMatchObject({ code: 2, stderr: expect.stringContaining('--names PATTERN') });
    expect(await nbdmux(['machines', 'set', first, '--export', 'debian', '--unset', 'export'])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('give a value for export or --unset it, not both'),
    });
    // REST says the same by its own routes.
    const removed = await api(daemon, 'DELETE', '/profiles/rack3');
    expect(removed.status).toBe(409);
    expect(removed.json.error.message).toContain('PATCH /machines/{mac} with "profile": null takes each out of it');
    expect((await api(daemon, 'GET', '/profiles/nope')).status).toBe(404);
    expect((await api(daemon, 'POST', '/profiles/rack3/adopt', { names: 'x{1..2}' })).json.error.message).toContain(
      'no discovered MAC to adopt',
    );

    for (const mac of [first, second]) expect((await nbdmux(['machines', 'set', mac, '--no-profile'])).code).toBe(0);
    // Out of the profile, a machine keeps only its own fields: none here, so its console says so.
    expect(await script(first)).toContain('no export is set for it');
    expect(await nbdmux(['profiles', 'rm', 'rack3'])).toMatchObject({ code: 0, stdout: 'removed profile rack3\n' });
    expect(await nbdmux(['profiles'])).toMatchObject({
      code: 0,
      stdout: 'no profiles; add one with: nbdmux profiles add NAME --export EXPORT\n',
    });
  });
});
