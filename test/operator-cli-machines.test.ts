import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient, type NbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { runText } from '../testkit/process.js';

const cli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));

const node1 = '52:54:00:12:34:56';
const node2 = '52:54:00:12:34:57';

/** `nbdmux machines ...`, run as an operator would, against a real daemon. */
describe('the operator CLI with machines', () => {
  let daemon: RunningDaemon;
  let client: NbdmuxClient;

  beforeAll(async () => {
    daemon = await startDaemon();
    client = createNbdmuxClient({ url: daemon.url });
    const images = tempDir('nbdmux-images-');
    await client.exports.create.mutate({ name: 'deb', file: makeImage(images, 'deb.img', 1024 * 1024) });
    await client.exports.create.mutate({ name: 'alp', file: makeImage(images, 'alp.img', 1024 * 1024) });
  });
  afterAll(() => killEverything([daemon.dataDir]));

  const nbdmux = (args: string[]) => {
    const { NBDMUX_ADMIN_PASSWORD: _password, ...env } = process.env;
    return runText(process.execPath, [cli, ...args], { env: { ...env, NBDMUX_URL: daemon.url }, timeoutMs: 20_000 });
  };
  const lastEvent = async (type: string) => (await client.events.list.query({ limit: 20 })).find((event) => event.type === type);

  it('adds machines, lists each with its stage and for how long, and shows one with the timeline of its boot', async () => {
    expect(await nbdmux(['machines'])).toMatchObject({
      code: 0,
      stdout: 'no machines; add one with: nbdmux machines add MAC NAME --export EXPORT\n',
    });

    // Any spelling of a MAC is the one lower-case, colon-separated machine.
    const added = await nbdmux(['machines', 'add', '52-54-00-12-34-56', 'node-1', '--export', 'deb', '--cmdline', 'quiet']);
    expect(added).toMatchObject({ code: 0, stderr: '' });
    expect(added.stdout).toMatch(
      /^added node-1\nname +node-1\nmac +52:54:00:12:34:56\nexport +deb\nkernel args +quiet\npersistent +no: each boot starts from the image\nmachine id +[0-9a-f]{32}\nstage +never booted/,
    );
    const persistent = await nbdmux(['machines', 'add', node2, 'node-2', '--persistent', '--state-size', '64M']);
    expect(persistent.stdout).toMatch(
      /\nexport +none\n(.*\n)*persistent +yes: 64\.0 MiB \(67108864 bytes\) of state, exported as __state-525400123457 /,
    );

    // Its script fetched, then ramboot's failure report, both from the address of its boot.
    expect((await api(daemon, 'GET', `/boot.ipxe?mac=${node1}`)).status).toBe(200);
    const failed = await fetch(`${daemon.url}/boot/report?mac=${node1}&stage=failed`, {
      method: 'POST',
      body: 'FAILED: no root device\nnbd0 refused by 127.0.0.1',
    });
    expect(failed.status).toBe(204);

    const listed = await nbdmux(['machines', 'list']);
    const [header, ...rows] = listed.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^NAME +MAC +PROFILE +EXPORT +STATE +STAGE +SINCE +ADDRESS +SEEN$/);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatch(/^node-1 +52:54:00:12:34:56 +- +deb +- +failed +\d+s +127\.0\.0\.1 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(rows[1]).toMatch(/^node-2 +52:54:00:12:34:57 +- +- +64\.0 MiB +never booted +- +- +never$/);
    expect(JSON.parse((await nbdmux(['--json', 'machines'])).stdout)).toEqual(await client.machines.list.query());

    const shown = await nbdmux(['machines', 'show', node1.toUpperCase()]);
    expect(shown.code).toBe(0);
    // The reason in full, its second line under the first; then each stage since the script.
    expect(shown.stdout).toMatch(
      /\nstage +failed for \d+s \(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)\ndetail +FAILED: no root device\n +nbd0 refused by 127\.0\.0\.1\nattached +no\naddress +127\.0\.0\.1\n/,
    );
    expect(shown.stdout).toMatch(/\n\nSTAGE +AT +AFTER\nscript +\S+ \S+ +\d+s\nfailed +\S+ \S+ +\d+s\n$/);
  });

  it('changes machines with set: export, keep-state, name; resets and removes them', async () => {
    const moved = await nbdmux(['machines', 'set', node2, '--export', 'deb', '--keep-state']);
    expect(moved.stdout).toMatch(/^updated node-2\n(.*\n)*export +deb\n/);
    expect((await lastEvent('machine.updated'))?.details).toMatchObject({ mac: node2, changed: ['export'], stateDiscarded: false });
    expect((await nbdmux(['machines', 'set', node2, '--export', 'alp'])).code).toBe(0);
    expect((await lastEvent('machine.updated'))?.details).toMatchObject({ changed: ['export'], stateDiscarded: true });

    const renamed = await nbdmux(['machines', 'set', node1, '--name', 'rack3-node7', '--no-export', '--cmdline', '']);
    expect(renamed.stdout).toMatch(
      /^updated rack3-node7\nname +rack3-node7\nmac +52:54:00:12:34:56\nexport +none\nkernel args +\(none\)\n/,
    );
    expect(await client.machines.get.query({ mac: node1 })).toMatchObject({ name: 'rack3-node7', export: null, cmdline: '' });

    // An export removed under a machine: the machine stays, with none and the reason.
    expect((await nbdmux(['machines', 'set', node1, '--export', 'deb'])).code).toBe(0);
    await client.exports.delete.mutate({ name: 'deb' });
    expect((await nbdmux(['machines'])).stdout).toMatch(/\nrack3-node7 +52:54:00:12:34:56 +- +- \(removed\) /);
    expect((await nbdmux(['machines', 'show', node1])).stdout).toMatch(
      /\nexport +none: its export deb was removed at \S+: set another one\n/,
    );

    expect(await nbdmux(['machines', 'reset', node2])).toMatchObject({
      code: 0,
      stdout: 'discarded the state of node-2 (52:54:00:12:34:57): its next boot starts from the image as it is\n',
    });
    expect((await lastEvent('machine.reset'))?.details).toMatchObject({ mac: node2 });
    expect(await nbdmux(['machines', 'reset', node1])).toMatchObject({
      code: 1,
      stdout: '',
      stderr: `nbdmux machines reset: machine rack3-node7 is not persistent, so it has no state to reset; "nbdmux machines set ${node1} --persistent" gives it one\n`,
    });

    expect(await nbdmux(['machines', 'rm', node2])).toMatchObject({
      code: 0,
      stdout: 'removed node-2 (52:54:00:12:34:57), and its state\n',
    });
    expect(await nbdmux(['machines', 'rm', node2])).toMatchObject({
      code: 1,
      stdout: '',
      stderr: expect.stringMatching(
        /^nbdmux machines rm: no machine with MAC 52:54:00:12:34:57; "nbdmux machines" lists them, and unknown MACs that asked to boot are under "nbdmux machines discovered"\n$/,
      ),
    });
    expect((await client.machines.list.query()).map((m) => m.mac)).toEqual([node1]);
  });

  it('lists the unknown MACs that asked to boot', async () => {
    expect(await nbdmux(['machines', 'discovered'])).toMatchObject({ code: 0, stdout: 'no unknown MAC has asked to boot\n' });
    for (let i = 0; i < 2; i++) expect((await api(daemon, 'GET', '/boot.ipxe?mac=52:54:00:AA:BB:CC')).status).toBe(200);
    const listed = await nbdmux(['machines', 'discovered']);
    expect(listed.stdout).toMatch(/^MAC +ADDRESS +FIRST +LAST +REQUESTS\n52:54:00:aa:bb:cc +127\.0\.0\.1 +\S+ \S+ +\S+ \S+ +2\n$/);
    expect(JSON.parse((await nbdmux(['machines', 'discovered', '--json'])).stdout)).toEqual(await client.machines.discovered.query());
  });

  it('exits 2 on usage errors and 1 on refusals, with one line that says what to do', async () => {
    const cases: Array<[args: string[], exitCode: 1 | 2, stderr: RegExp]> = [
      [['machines', 'frob'], 2, /^nbdmux: unknown command "machines frob"; run "nbdmux --help"\n$/],
      [['machines', 'add', node2], 2, /^nbdmux: machines add takes MAC NAME, got "52:54:00:12:34:57"; run "nbdmux --help"\n$/],
      [['machines', '--force'], 2, /^nbdmux: machines list takes no --force; run "nbdmux --help"\n$/],
      [['machines', 'add', node2, 'n2', '--keep-state'], 2, /^nbdmux: machines add takes no --keep-state; run "nbdmux --help"\n$/],
      [['machines', 'set', node1], 2, /^nbdmux machines set: give what to change: --name, --export, .*; run "nbdmux --help"\n$/],
      [
        ['machines', 'set', node1, '--export', 'alp', '--no-export'],
        2,
        /^nbdmux machines set: give --export EXPORT or --no-export, not both; run "nbdmux --help"\n$/,
      ],
      [
        ['machines', 'set', node1, '--persistent', '--no-persistent'],
        2,
        /^nbdmux machines set: give --persistent or --no-persistent, not both; run "nbdmux --help"\n$/,
      ],
      [['machines', 'add', '52:54:00:12:34', 'n2'], 1, /^nbdmux machines add: mac: must be a MAC address: six pairs of hex digits/],
      [['machines', 'add', node2, 'Node_2'], 1, /^nbdmux machines add: name: must be a host name/],
      [
        ['machines', 'add', node2, 'n2', '--export', 'ghost'],
        1,
        /^nbdmux machines add: export: no export "ghost"; "nbdmux ls" lists them\n$/,
      ],
      [
        ['machines', 'add', node1, 'n2'],
        1,
        /^nbdmux machines add: a machine with MAC 52:54:00:12:34:56 already exists; change it with "nbdmux machines set 52:54:00:12:34:56" and what to change \(--name, --export, --cmdline, \.\.\.\)\n$/,
      ],
      [
        ['machines', 'add', node2, 'n2', '--persistent', '--state-size', 'lots'],
        1,
        /^nbdmux machines add: stateSize: must be a whole number of bytes/,
      ],
      [
        ['machines', 'add', node2, 'rack3-node7'],
        1,
        /^nbdmux machines add: a machine named rack3-node7 already exists: choose another name\n$/,
      ],
      [['machines', 'set', node1, '--keep-state'], 2, /^nbdmux machines set: give what to change/],
    ];
    const results = await Promise.all(cases.map(([args]) => nbdmux(args)));
    for (const [i, [args, exitCode, stderr]] of cases.entries()) {
      expect({ args, ...results[i] }).toMatchObject({ args, code: exitCode, stdout: '', stderr: expect.stringMatching(stderr) });
    }
    expect((await client.machines.list.query()).map((m) => m.name)).toEqual(['rack3-node7']);
    // The same refusal over REST names the REST route, and carries the remedy as data for any client to word.
    expect(await api(daemon, 'POST', '/machines', { mac: node1, name: 'n2' })).toMatchObject({
      status: 409,
      json: {
        error: {
          code: 'CONFLICT',
          message: `a machine with MAC ${node1} already exists; change it with PATCH /machines/${node1}`,
          problem: `a machine with MAC ${node1} already exists`,
          remedy: { kind: 'edit-machine', mac: node1 },
        },
      },
    });

    const help = await nbdmux(['--help']);
    for (const command of [
      'machines list',
      'machines add MAC NAME [--export EXPORT]',
      'machines set MAC [--name NAME]',
      'machines show MAC',
      'machines rm MAC',
      'machines reset MAC',
      'machines discovered',
    ]) {
      expect(help.stdout).toContain(`\n  ${command}`);
    }
  });
});
