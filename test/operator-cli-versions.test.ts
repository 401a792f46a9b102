import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeTestImage, pack, serveFile, serveStalled, sha256Of, startImageServer, type ImageServer } from '../testkit/image-fixtures.js';
import { readExport, sha256 } from '../testkit/nbd.js';
import { runText } from '../testkit/process.js';

const cli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));

/** `nbdmux import`, `versions` and `rollback`, run as an operator would (no terminal: plain lines). */
describe('the operator CLI with imports and versions', () => {
  let work: string;
  let server: ImageServer;
  let daemon: RunningDaemon;
  const raw: Record<'one' | 'two', string> = { one: '', two: '' };
  let oneZst: string;

  beforeAll(async () => {
    work = fs.realpathSync(tempDir('nbdmux-cli-imports-'));
    raw.one = makeTestImage(work, 'one.img', 3);
    raw.two = makeTestImage(work, 'two.img', 2);
    oneZst = await pack(raw.one, 'zst');
    server = await startImageServer({
      '/one.img.zst': serveFile(oneZst),
      '/two.img': serveFile(raw.two),
      '/stalled.img': serveStalled(raw.two, 4096),
    });
    daemon = await startDaemon();
  });
  afterAll(async () => {
    killEverything([daemon.dataDir]);
    await server?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const nbdmux = (args: string[]) => {
    const { NBDMUX_ADMIN_PASSWORD: _password, ...env } = process.env;
    return runText(process.execPath, [cli, ...args], { env: { ...env, NBDMUX_URL: daemon.url }, timeoutMs: 60_000 });
  };
  const servedSha = async () => sha256(await readExport(daemon.nbdUri('net')));

  it('imports a new export and then a new version, showing progress lines, and serves the original bytes', async () => {
    const first = await nbdmux(['import', 'net', server.url('/one.img.zst'), '--sha256', sha256Of(oneZst)]);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(
      new RegExp(
        `^importing ${server.url('/one.img.zst')} as version 1 of net\\n(?:(?:queued|downloading|decompressing|verifying) .*\\n)*imported version 1 of net: 3\\.0 MiB in \\d+\\.\\ds \\(\\d+(\\.\\d)? [KMG]iB/s\\), now serving\\n$`,
      ),
    );
    expect(await servedSha()).toBe(sha256Of(raw.one));

    const second = await nbdmux(['import', 'net', server.url('/two.img')]);
    expect(second).toMatchObject({ code: 0, stderr: '' });
    expect(second.stdout).toMatch(/imported version 2 of net: 2\.0 MiB in \d+\.\ds \(\d+(\.\d)? [KMG]iB\/s\), now serving\n$/);
    expect(await servedSha()).toBe(sha256Of(raw.two));
  });

  it('lists versions, newest first, and rolls back to the previous or a given one', async () => {
    const listed = await nbdmux(['versions', 'net']);
    expect(listed.code).toBe(0);
    const [header, ...rows] = listed.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^VER +CURRENT +STATE +SIZE +CONNS +CREATED +SOURCE$/);
    expect(rows.map((row) => row.trim().split(/\s+/).slice(0, 4))).toEqual([
      ['2', '*', 'ready', '2.0'],
      ['1', 'ready', '3.0', 'MiB'],
    ]);

    expect(await nbdmux(['rollback', 'net'])).toMatchObject({
      code: 0,
      stdout: 'net serves version 1 to new clients; live ones keep the version they attached\n',
    });
    expect(await servedSha()).toBe(sha256Of(raw.one));
    expect(await nbdmux(['rollback', 'net', '2'])).toMatchObject({ code: 0, stdout: expect.stringContaining('serves version 2') });
    expect(await servedSha()).toBe(sha256Of(raw.two));
  });

  it('shows an export whose first version is importing (at its stage), or failed (with why), as the daemon reports it', async () => {
    // Started through the API: the CLI's import would follow each to its end.
    expect((await api(daemon, 'POST', '/exports', { name: 'slow', url: server.url('/stalled.img') })).status).toBe(202);
    expect((await api(daemon, 'POST', '/exports', { name: 'missing', url: server.url('/nothing-here.img') })).status).toBe(202);
    const stateLine = async (name: string) => /^state +(.*)$/m.exec((await nbdmux(['show', name])).stdout)?.[1];

    // The stalled server sent its length and first bytes: the import stays downloading, at the share the daemon counted.
    expect(
      await waitFor('the download to start', async () => {
        const line = await stateLine('slow');
        return line === undefined || /^importing: (queued|downloading \d+(\.\d)? [KM]?i?B) /.test(line) ? undefined : line;
      }),
    ).toMatch(/^importing: downloading \d+% \(no version is ready yet: no client can attach it\)$/);
    const failed = await waitFor('the import to fail', async () => {
      const line = await stateLine('missing');
      return line?.startsWith('importing') ? undefined : line;
    });
    expect(failed).toMatch(
      /^failed: GET \S+\/nothing-here\.img answered 404 Not Found \(no version is ready: no client can attach it; "nbdmux import missing URL" tries again\)$/,
    );
    expect((await nbdmux(['show', 'missing'])).stdout).toMatch(
      /\nimport +http:\S+\/nothing-here\.img: version 1 failed: GET \S+ answered 404 Not Found\n/,
    );
    const listed = (await nbdmux(['ls'])).stdout;
    expect(listed).toMatch(/\nmissing +failed +ro +- +- +0 +-\n(.*\n)*slow +importing: downloading \d+% +ro /);
    // The reason, whole, under the table.
    expect(listed).toMatch(/\n\nmissing: version 1 failed: GET \S+ answered 404 Not Found; "nbdmux import missing URL" tries again\n$/);
    expect((await nbdmux(['rm', 'slow'])).code).toBe(0);
  });

  it.each<[what: string, args: () => string[], code: number, message: RegExp]>([
    [
      'an import that fails',
      () => ['import', 'gone', server.url('/missing.img')],
      1,
      /^nbdmux import: the import of version 1 failed: .*404/,
    ],
    [
      '--rw for an existing export',
      () => ['import', 'net', server.url('/two.img'), '--rw'],
      1,
      /^nbdmux import: net exists: the import becomes its next version/,
    ],
    ['a VERSION that is no number', () => ['rollback', 'net', 'two'], 2, /^nbdmux rollback: VERSION must be a version number/],
    [
      'a VERSION that never was',
      () => ['rollback', 'net', '7'],
      1,
      /^nbdmux rollback: export "net" has no version 7; "nbdmux versions net" lists its versions\n$/,
    ],
    ['no NAME', () => ['rollback'], 2, /^nbdmux: rollback takes NAME \[VERSION\], got none/],
  ])('fails on %s with one line and its exit code', async (_what, args, code, message) => {
    const result = await nbdmux(args());
    expect(result.code, result.stderr).toBe(code);
    expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(message);
  });
});
