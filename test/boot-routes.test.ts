import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { fakeKit } from './helpers/fake-kit.js';
import { makeImage } from '../testkit/nbd.js';
import { runText } from '../testkit/process.js';

const operatorCli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));

const password = 'boot routes test password';
const bearer = { authorization: `Bearer ${password}` };

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One HTTP request with the Host and source address a lab machine would have. */
function request(
  daemon: RunningDaemon,
  route: string,
  options: { method?: string; host?: string; from?: string; headers?: Record<string, string>; json?: unknown } = {},
): Promise<Reply> {
  const body = options.json === undefined ? undefined : JSON.stringify(options.json);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: daemon.httpPort,
        path: route,
        method: options.method ?? 'GET',
        localAddress: options.from ?? '127.0.0.1',
        headers: {
          host: options.host ?? `127.0.0.1:${daemon.httpPort}`,
          ...(body !== undefined && { 'content-type': 'application/json' }),
          ...options.headers,
        },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer to ${route} in 10 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Once nbdmux has looked inside each export's image: before, none is ready to boot. */
async function inspected(daemon: RunningDaemon, headers: Record<string, string> = {}): Promise<void> {
  await waitFor('every image inspected', async () => {
    const exports = JSON.parse((await request(daemon, '/exports', { headers })).body.toString()) as { boot: { reason: string | null } }[];
    return exports.every((exp) => exp.boot.reason !== 'inspecting') || undefined;
  });
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const bootRoutes = (name: string) => ['/boot.ipxe', `/boot/${name}.ipxe`, `/boot/${name}/vmlinuz`, `/boot/${name}/initrd.img`];

describe('boot routes', () => {
  const dataDirs: string[] = [];
  let daemon: RunningDaemon;
  let kit: string;
  let image: string;
  const publicPort = 18099;

  beforeAll(async () => {
    kit = fakeKit(randomBytes(3 * 1024 * 1024 + 17));
    image = makeImage(tempDir('nbdmux-images-'), 'boot.img', 1024 * 1024);
    daemon = await startDaemon({
      args: [
        ...['--ramboot-kit', kit, '--nbd-public-port', String(publicPort), '--boot-default', 'alpha', '--boot-menu-timeout', '3'],
        ...['--nbd-allow', '127.0.0.1', '--nbd-allow', '127.0.0.3', '--allowed-host', '10.0.2.100'],
      ],
      env: { NBDMUX_ADMIN_PASSWORD: password },
    });
    dataDirs.push(daemon.dataDir);
    for (const exp of [
      { name: 'alpha', file: image },
      { name: 'beta', file: image, cmdline: 'quiet net.ifnames=0 nbdroot.overlay=2G' },
      { name: 'only3', file: image, allow: ['127.0.0.3'] },
    ]) {
      expect((await request(daemon, '/exports', { method: 'POST', json: exp, headers: bearer })).status).toBe(201);
    }
    await inspected(daemon, bearer);
  });
  afterAll(() => killEverything(dataDirs));

  it('serves the iPXE script for an export, pointing back at the host and port the machine used', async () => {
    const reply = await request(daemon, '/boot/alpha.ipxe');
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(reply.body.toString()).toBe(
      [
        '#!ipxe',
        'echo nbdmux: booting alpha',
        `kernel http://127.0.0.1:${daemon.httpPort}/boot/alpha/vmlinuz?busid=\${netX/busid} initrd=initrd.img nbdroot=127.0.0.1:${publicPort}/alpha console=tty0 console=ttyS0,115200`,
        `initrd http://127.0.0.1:${daemon.httpPort}/boot/alpha/initrd.img?busid=\${netX/busid}`,
        'boot',
        '',
      ].join('\n'),
    );
  });

  it('uses the Host a machine behind a forward used, and the export own kernel arguments', async () => {
    // qemu's guestfwd: the machine asked http://10.0.2.100/ (port 80), which reaches us on loopback.
    const script = (await request(daemon, '/boot/beta.ipxe', { host: '10.0.2.100' })).body.toString();
    expect(script).toContain(
      `kernel http://10.0.2.100/boot/beta/vmlinuz?busid=\${netX/busid} initrd=initrd.img nbdroot=10.0.2.100:${publicPort}/beta quiet net.ifnames=0 nbdroot.overlay=2G\n`,
    );
    expect(script).toContain('initrd http://10.0.2.100/boot/beta/initrd.img?busid=${netX/busid}\n');
  });

  it('gives the initramfs an address, not a name, for NBD: the one the request arrived on', async () => {
    const script = (await request(daemon, '/boot/alpha.ipxe', { host: `localhost:${daemon.httpPort}` })).body.toString();
    expect(script).toContain(
      `kernel http://localhost:${daemon.httpPort}/boot/alpha/vmlinuz?busid=\${netX/busid} initrd=initrd.img nbdroot=127.0.0.1:${publicPort}/alpha `,
    );
  });

  it('offers a menu of the exports this machine may boot, booting --boot-default after --boot-menu-timeout', async () => {
    const menu = (await request(daemon, '/boot.ipxe')).body.toString();
    expect(menu).toBe(
      [
        '#!ipxe',
        'menu nbdmux: choose an export to boot',
        'item alpha alpha',
        'item beta beta',
        'choose --default alpha --timeout 3000 target || exit 1',
        `chain http://127.0.0.1:${daemon.httpPort}/boot/\${target}.ipxe`,
        '',
      ].join('\n'),
    );
    expect((await request(daemon, '/boot.ipxe', { from: '127.0.0.3' })).body.toString()).toContain('item only3 only3\n');
  });

  it("reads the NIC a boot file's URL names (iPXE's busid), and refuses one that is no busid, saying what it wants", async () => {
    for (const busid of ['01:80:86:10:0e', '', '07:00:00:00:01'])
      expect((await request(daemon, `/boot/alpha/vmlinuz?busid=${busid}`)).status, busid).toBe(200);
    const refused = await request(daemon, '/boot/alpha/initrd.img?busid=01:80:86:10:0e;reboot');
    expect(refused.status).toBe(400);
    expect(JSON.parse(refused.body.toString()).error.message).toBe(
      'busid "01:80:86:10:0e;reboot" is not five hex bytes (iPXE\'s ${netX/busid}, e.g. 01:80:86:10:0e); the script nbdmux serves passes it as ?busid=${netX/busid}',
    );
  });

  it('sends the kit files whole, streamed, with their length, and answers HEAD and If-None-Match', async () => {
    for (const [route, file] of [
      ['/boot/alpha/vmlinuz', 'vmlinuz'],
      ['/boot/beta/initrd.img', 'initrd.img'],
    ] as const) {
      const bytes = fs.readFileSync(path.join(kit, file));
      const got = await request(daemon, route);
      expect(got.status).toBe(200);
      expect(Number(got.headers['content-length'])).toBe(bytes.length);
      expect(sha256(got.body)).toBe(sha256(bytes));
      const etag = got.headers.etag!;
      expect(etag).toMatch(/^"[^"]+"$/);

      const head = await request(daemon, route, { method: 'HEAD' });
      expect([head.status, head.headers['content-length'], head.headers.etag, head.body.length]).toEqual([
        200,
        String(bytes.length),
        etag,
        0,
      ]);

      const cached = await request(daemon, route, { headers: { 'if-none-match': `"other", ${etag}` } });
      expect([cached.status, cached.body.length, cached.headers.etag]).toEqual([304, 0, etag]);
      expect((await request(daemon, route, { headers: { 'if-none-match': '"other"' } })).status).toBe(200);
    }
    const script = await request(daemon, '/boot/alpha.ipxe');
    expect((await request(daemon, '/boot/alpha.ipxe', { headers: { 'if-none-match': script.headers.etag! } })).status).toBe(304);
    const head = await request(daemon, '/boot/alpha.ipxe', { method: 'HEAD' });
    expect([head.status, Number(head.headers['content-length']), head.body.length]).toEqual([200, script.body.length, 0]);
  });

  it('refuses every boot route to an address outside --nbd-allow, and an export to one outside its allow list', async () => {
    for (const route of [...bootRoutes('alpha'), ...bootRoutes('only3')]) {
      expect([route, (await request(daemon, route, { from: '127.0.0.2' })).status]).toEqual([route, 403]);
    }
    for (const route of bootRoutes('only3').slice(1)) {
      expect([route, (await request(daemon, route, { from: '127.0.0.1' })).status]).toEqual([route, 403]);
      expect([route, (await request(daemon, route, { from: '127.0.0.3' })).status]).toEqual([route, 200]);
    }
    // Hidden and absent exports get the same answer, as on the NBD port.
    const hidden = await request(daemon, '/boot/only3.ipxe');
    const absent = await request(daemon, '/boot/nosuch.ipxe');
    expect(JSON.parse(hidden.body.toString()).error.message.replace('only3', 'X')).toBe(
      JSON.parse(absent.body.toString()).error.message.replace('nosuch', 'X'),
    );
    expect((await request(daemon, '/boot.ipxe')).body.toString()).not.toContain('only3');
  });

  it('stays open with a password set, while the control plane still asks for one', async () => {
    for (const route of bootRoutes('alpha')) expect([route, (await request(daemon, route)).status]).toEqual([route, 200]);
    expect((await request(daemon, '/exports')).status).toBe(401);
    expect((await request(daemon, '/boot/alpha/other')).status).toBe(401);
    expect((await request(daemon, '/boot/alpha.ipxe', { method: 'POST' })).status).toBe(405);
  });

  it('records each fetch as an event with the client address and export', async () => {
    await request(daemon, '/boot/beta.ipxe', { from: '127.0.0.3' });
    await request(daemon, '/boot/beta/vmlinuz', { from: '127.0.0.3' });
    await request(daemon, '/boot/beta/initrd.img', { from: '127.0.0.3' });
    const client = createNbdmuxClient({ url: daemon.url, password });
    const events = (await client.events.list.query({ limit: 50 })).filter(
      (event) =>
        (event.type === 'boot.script' || event.type === 'boot.kernel' || event.type === 'boot.initrd') &&
        event.details.client === '127.0.0.3' &&
        event.exportName === 'beta',
    );
    expect(events.map((event) => [event.type, event.details]).reverse()).toEqual([
      ['boot.script', { client: '127.0.0.3', status: 200, nbd: `127.0.0.1:${publicPort}` }],
      ['boot.kernel', { client: '127.0.0.3', status: 200, bytes: fs.statSync(path.join(kit, 'vmlinuz')).size }],
      ['boot.initrd', { client: '127.0.0.3', status: 200, bytes: fs.statSync(path.join(kit, 'initrd.img')).size }],
    ]);
  });

  it('shows boot and cmdline in GET /exports', async () => {
    const beta = JSON.parse((await request(daemon, '/exports/beta', { headers: bearer })).body.toString());
    expect(beta.cmdline).toBe('quiet net.ifnames=0 nbdroot.overlay=2G');
    expect(beta.boot).toEqual({
      ready: true,
      os: null,
      kernel: '6.1.0-99-amd64',
      partition: null,
      fstype: null,
      layout: null,
      lv: null,
      subvol: null,
      reason: "boots the ramboot kit's kernel 6.1.0-99-amd64: no partition table and no filesystem nbdmux recognises",
    });
    expect(JSON.parse((await request(daemon, '/exports/alpha', { headers: bearer })).body.toString()).cmdline).toBe(
      'console=tty0 console=ttyS0,115200',
    );
  });

  it('shows boot and kernel args in nbdmux show', async () => {
    const { NBDMUX_URL: _url, ...env } = process.env;
    const shown = await runText(process.execPath, [operatorCli, 'show', 'beta'], {
      env: { ...env, NBDMUX_URL: daemon.url, NBDMUX_ADMIN_PASSWORD: password },
      timeoutMs: 20_000,
    });
    expect(shown.stdout).toMatch(
      /\nboot +ready: kernel 6\.1\.0-99-amd64 \(boots the ramboot kit's kernel 6\.1\.0-99-amd64: no partition table and no filesystem nbdmux recognises\)\nkernel args +quiet net\.ifnames=0 nbdroot\.overlay=2G\n/,
    );
  });

  it.each([
    ['a newline', 'quiet\nchain http://evil/'],
    ['an iPXE setting', 'hostname=${net0/mac}'],
    ['a comment', 'quiet # rest'],
    ['a command separator', 'quiet || shell'],
    ['quotes', 'x="a b"'],
    ['a line continuation', 'quiet \\'],
    ['a second nbdroot', 'nbdroot=10.9.9.9:10809/other'],
    ['too long', 'x'.repeat(1025)],
    ['not a string', 42],
  ])('refuses a cmdline with %s, changing nothing', async (_what, cmdline) => {
    const reply = await request(daemon, '/exports', { method: 'POST', json: { name: 'hostile', file: image, cmdline }, headers: bearer });
    expect(reply.status).toBe(400);
    expect(JSON.parse(reply.body.toString()).error.issues.map((issue: { field: string }) => issue.field)).toEqual(['cmdline']);
    expect((await request(daemon, '/exports/hostile', { headers: bearer })).status).toBe(404);
  });
});

describe('boot routes without a kit or --nbd-public-port', () => {
  const dataDirs: string[] = [];
  let daemon: RunningDaemon;

  beforeAll(async () => {
    daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    const image = makeImage(tempDir('nbdmux-images-'), 'boot.img', 1024 * 1024);
    expect((await request(daemon, '/exports', { method: 'POST', json: { name: 'alpha', file: image } })).status).toBe(201);
  });
  afterAll(() => killEverything(dataDirs));

  it('says what to do instead of serving nothing', async () => {
    const exp = JSON.parse((await request(daemon, '/exports/alpha')).body.toString());
    expect(exp.boot).toMatchObject({ ready: false, kernel: null });
    expect(exp.boot.reason).toContain('--ramboot-kit DIR');
    const script = await request(daemon, '/boot/alpha.ipxe');
    expect(script.status).toBe(503);
    expect(JSON.parse(script.body.toString()).error.message).toContain('--ramboot-kit DIR');
    for (const route of ['/boot/alpha/vmlinuz', '/boot/alpha/initrd.img'])
      expect([route, (await request(daemon, route)).status]).toEqual([route, 404]);
    expect((await request(daemon, '/boot.ipxe')).body.toString()).toMatch(/^#!ipxe\necho nbdmux: no export is ready to boot/);
  });

  it('refuses to start with a --ramboot-kit that is not a kit', async () => {
    await expect(startDaemon({ args: ['--ramboot-kit', tempDir('nbdmux-not-a-kit-')] })).rejects.toThrow(
      /--ramboot-kit .* holds no vmlinuz/,
    );
  });

  it('puts the NBD port nbdmux listens on in nbdroot by default, and streams a kernel it never holds whole', async () => {
    // A sparse 256 MiB "kernel": a daemon that read it whole would peak 256 MiB higher; streaming
    // it costs a fixed ~40 MiB of buffers here, the same for 1 GiB.
    const kernelBytes = 256 * 1024 * 1024;
    const kit = fakeKit({ sparseBytes: kernelBytes });
    const withKit = await startDaemon({ args: ['--ramboot-kit', kit] });
    dataDirs.push(withKit.dataDir);
    const image = makeImage(tempDir('nbdmux-images-'), 'boot.img', 1024 * 1024);
    expect((await request(withKit, '/exports', { method: 'POST', json: { name: 'alpha', file: image } })).status).toBe(201);
    await inspected(withKit);
    expect((await request(withKit, '/boot/alpha.ipxe')).body.toString()).toContain(`nbdroot=127.0.0.1:${withKit.nbdPort}/alpha `);

    const peakBefore = peakRssBytes(withKit.child.pid!);
    const { length, digest } = await hashDownload(`${withKit.url}/boot/alpha/vmlinuz`);
    const zeros = createHash('sha256');
    for (let i = 0; i < kernelBytes / (1024 * 1024); i++) zeros.update(Buffer.alloc(1024 * 1024));
    expect([length, digest]).toEqual([kernelBytes, zeros.digest('hex')]);
    const grew = peakRssBytes(withKit.child.pid!) - peakBefore;
    console.log(`daemon peak RSS grew by ${(grew / 1024 / 1024).toFixed(1)} MiB while sending a 256 MiB kernel`);
    expect(grew).toBeLessThan(128 * 1024 * 1024);
  });
});

/** The most memory a process has held at once (VmHWM). */
function peakRssBytes(pid: number): number {
  return Number(/^VmHWM:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

/** Downloads a URL, hashing as it comes, so the test itself holds no large body. */
function hashDownload(url: string): Promise<{ length: number; digest: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        const hash = createHash('sha256');
        let length = 0;
        res.on('data', (chunk: Buffer) => {
          length += chunk.length;
          hash.update(chunk);
        });
        res.on('end', () => resolve({ length, digest: hash.digest('hex') }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}
