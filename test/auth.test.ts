import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SessionTokens } from '../src/auth/tokens.js';
import { appRouter } from '../src/router/index.js';
import { launchBrowser } from './helpers/browser.js';
import { attemptLogin, logIn } from './helpers/auth.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { listExports, makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';
import { skipWithout } from './helpers/tools.js';

const password = 'correct horse battery staple';
const secret = 'a-test-signing-secret-of-at-least-32-characters';

/** `guess`: a wrong password, which the throttle counts, so it runs against a daemon of its own. */
type Credentials = { name: string; headers: () => Record<string, string>; works: boolean; guess?: boolean };

describe('auth for the control plane', () => {
  let daemon: RunningDaemon;
  let image: string;
  let cookie: string;
  const dataDirs: string[] = [];

  beforeAll(async () => {
    daemon = await startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: password, NBDMUX_SESSION_SECRET: secret } });
    dataDirs.push(daemon.dataDir);
    image = makeImage(tempDir('nbdmux-images-'), 'auth.img', 1024 * 1024);
    cookie = await logIn(daemon, password);
  });
  afterAll(() => killEverything(dataDirs));

  const tokens = new SessionTokens(secret, password);
  const valid = () => cookie;
  const credentials: Credentials[] = [
    { name: 'no credentials', headers: () => ({}), works: false },
    { name: 'a wrong bearer password', headers: () => ({ authorization: 'Bearer not-the-password' }), works: false, guess: true },
    { name: 'a forged cookie', headers: () => ({ cookie: 'nbdmux_session=eyJpZCI6ImZvcmdlZCJ9.c2lnbmF0dXJl' }), works: false },
    {
      name: 'a tampered cookie',
      headers: () => {
        const [payload, signature] = valid().split('=')[1]!.split('.');
        const changed = Buffer.from(
          JSON.stringify({ ...JSON.parse(Buffer.from(payload!, 'base64url').toString()), expiresAt: Date.now() + 9e9 }),
        ).toString('base64url');
        return { cookie: `nbdmux_session=${changed}.${signature}` };
      },
      works: false,
    },
    {
      name: 'an expired cookie',
      headers: () => ({ cookie: `nbdmux_session=${tokens.issue(Date.now() - 8 * 24 * 3600 * 1000).token}` }),
      works: false,
    },
    {
      name: 'a cookie signed under another password',
      headers: () => ({ cookie: `nbdmux_session=${new SessionTokens(secret, 'old password').issue().token}` }),
      works: false,
    },
    { name: 'the bearer password', headers: () => ({ authorization: `Bearer ${password}` }), works: true },
    { name: 'a real login cookie', headers: () => ({ cookie: valid(), origin: daemon.url }), works: true },
  ];

  const restRoutes: Array<[string, string, unknown?]> = [
    ['GET', '/exports'],
    ['POST', '/exports', { name: 'by-rest', file: '/nonexistent/x.img' }],
    ['GET', '/exports/by-rest'],
    ['DELETE', '/exports/by-rest'],
    ['GET', '/app.js'],
  ];
  const procedures = Object.entries(appRouter._def.procedures as unknown as Record<string, { _def: { type: string } }>).map(
    ([name, p]) => ({ name, type: p._def.type }),
  );

  it('knows every procedure it walks', () => {
    expect(procedures.map((p) => p.name)).toEqual(
      expect.arrayContaining(['exports.list', 'exports.create', 'events.stream', 'status.stream', 'system.health']),
    );
  });

  for (const cred of credentials) {
    it(`walks every REST route, the dashboard and every tRPC procedure (HTTP and WebSocket) with ${cred.name}: ${cred.works ? 'works' : 'refused'}`, async () => {
      let target = daemon;
      if (cred.guess) {
        target = await startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: password } });
        dataDirs.push(target.dataDir);
      }
      const statuses: Array<[string, number]> = [];
      for (const [method, route, body] of restRoutes) {
        const response = await fetch(target.url + route, {
          method,
          headers: { ...cred.headers(), ...(body !== undefined && { 'content-type': 'application/json' }) },
          ...(body !== undefined && { body: JSON.stringify(body) }),
        });
        statuses.push([`${method} ${route}`, response.status]);
      }
      for (const { name, type } of procedures) {
        if (type === 'subscription') continue;
        const response =
          type === 'query'
            ? await fetch(`${target.url}/trpc/${name}`, { headers: cred.headers() })
            : await fetch(`${target.url}/trpc/${name}`, {
                method: 'POST',
                headers: { ...cred.headers(), 'content-type': 'application/json' },
                body: '{}',
              });
        statuses.push([name, response.status]);
      }
      statuses.push(['WebSocket /trpc (every subscription)', await upgradeStatus(target, cred.headers())]);
      const dashboard = await (await fetch(target.url + '/', { headers: cred.headers() })).text();

      if (cred.works) {
        expect(statuses.filter(([, status]) => status === 401 || status === 403 || status === 429)).toEqual([]);
      } else if (cred.guess) {
        // Five wrong guesses are told so; after that the address is throttled.
        expect(statuses.map(([, status]) => status)).toEqual([...Array(5).fill(401), ...Array(statuses.length - 5).fill(429)]);
      } else {
        expect(statuses.filter(([, status]) => status !== 401)).toEqual([]);
      }
      expect(dashboard.includes('id="add-export"')).toBe(cred.works);
    });
  }

  it('keeps /healthz open', async () => {
    expect((await api(daemon, 'GET', '/healthz')).text).toBe('ok\n');
  });

  it('refuses cross-site requests and WebSockets that carry a valid cookie', async () => {
    const post = await fetch(`${daemon.url}/exports`, {
      method: 'POST',
      headers: { cookie, origin: 'http://evil.example', 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'csrf', file: image }),
    });
    expect(post.status).toBe(403);
    const noOrigin = await fetch(`${daemon.url}/trpc/exports.create`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'csrf', file: image }),
    });
    expect(noOrigin.status).toBe(403);
    expect(await upgradeStatus(daemon, { cookie, origin: 'http://evil.example' })).toBe(403);
    expect(await upgradeStatus(daemon, { cookie })).toBe(403);
    const listed = (await fetch(`${daemon.url}/exports`, { headers: { authorization: `Bearer ${password}` } }).then((r) =>
      r.json(),
    )) as Array<{ name: string }>;
    expect(listed.map((e) => e.name)).not.toContain('csrf');
  });

  it('sets an HttpOnly, SameSite=Strict cookie for 7 days and records logins with the source address', async () => {
    expect((await attemptLogin(daemon, 'a wrong guess')).status).toBe(401);
    const response = await fetch(`${daemon.url}/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { origin: daemon.url, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ password }),
    });
    expect(response.status).toBe(303);
    expect(response.headers.get('set-cookie')).toMatch(/^nbdmux_session=[^;]+; Max-Age=604800; Path=\/; HttpOnly; SameSite=Strict$/);
    const events = (await fetch(`${daemon.url}/trpc/events.list`, { headers: { authorization: `Bearer ${password}` } }).then((r) =>
      r.json(),
    )) as { result: { data: unknown[] } };
    const logins = (events.result.data as Array<{ type: string; details: { client: string } }>).filter((e) => e.type.startsWith('auth.'));
    expect(logins.some((e) => e.type === 'auth.login-succeeded' && e.details.client === '127.0.0.1')).toBe(true);
    expect(logins.some((e) => e.type === 'auth.login-failed' && e.details.client === '127.0.0.1')).toBe(true);
  });

  it('closes the live subscriptions of a session when it logs out, and the cookie stops working', async () => {
    const session = await logIn(daemon, password);
    const ws = new WebSocket(`${daemon.url.replace(/^http/, 'ws')}/trpc`, { headers: { cookie: session, origin: daemon.url } });
    await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
    ws.send(JSON.stringify({ id: 1, method: 'subscription', params: { path: 'events.stream', input: {} } }));
    const closed = new Promise<number>((resolve) => ws.once('close', resolve));
    const logout = await fetch(`${daemon.url}/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: session, origin: daemon.url },
    });
    expect(logout.status).toBe(303);
    expect(logout.headers.get('set-cookie')).toMatch(/^nbdmux_session=; .*Max-Age=0/);
    expect(await closed).toBe(4001);
    expect((await fetch(`${daemon.url}/exports`, { headers: { cookie: session } })).status).toBe(401);
  });

  it('throttles failed logins per source address', async () => {
    const throttled = await startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: password } });
    dataDirs.push(throttled.dataDir);
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) statuses.push((await attemptLogin(throttled, 'wrong')).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429]);
    // The right password is refused too while the address is throttled: no guessing around it.
    expect((await attemptLogin(throttled, password)).status).toBe(429);
    expect((await fetch(`${throttled.url}/exports`, { headers: { authorization: `Bearer ${password}` } })).status).toBe(429);
    // The generated signing secret is readable by its owner alone.
    expect(fs.statSync(path.join(throttled.dataDir, 'session-secret')).mode & 0o777).toBe(0o600);
  });

  it('invalidates sessions when the password changes', async () => {
    expect(await daemon.stop()).toBe(0);
    daemon = await startDaemon({
      dataDir: daemon.dataDir,
      env: { NBDMUX_ADMIN_PASSWORD: 'a new password', NBDMUX_SESSION_SECRET: secret },
    });
    expect((await fetch(`${daemon.url}/exports`, { headers: { cookie } })).status).toBe(401);
    expect((await fetch(`${daemon.url}/exports`, { headers: { authorization: 'Bearer a new password' } })).status).toBe(200);
  });

  it.skipIf(skipWithout('/usr/bin/chromium'))('lets a browser log in, see the dashboard, and log out', async () => {
    const browser = await launchBrowser();
    try {
      const page = await browser.context.newPage();
      await page.goto(daemon.url);
      await page.fill('input[name=password]', 'wrong');
      await page.click('button[type=submit]');
      await page.getByText('Wrong password.').waitFor();
      await page.fill('input[name=password]', 'a new password');
      await page.click('button[type=submit]');
      await page.waitForSelector('body[data-link="up"]');
      expect(await page.locator('#open-banner').isVisible()).toBe(false);
      await page.click('#logout button');
      await page.waitForSelector('input[name=password]');
    } finally {
      await browser.close();
    }
  });
});

describe('the NBD allow list', () => {
  const dataDirs: string[] = [];
  afterAll(() => killEverything(dataDirs));

  it('closes clients outside --nbd-allow before any nbd-server starts, and serves those inside', async () => {
    const image = makeImage(tempDir('nbdmux-images-'), 'guarded.img', 1024 * 1024);
    const inside = await startDaemon({ args: ['--nbd-allow', '127.0.0.1/32'] });
    const outside = await startDaemon({ args: ['--nbd-allow', '192.0.2.0/24', '--nbd-allow', '2001:db8::/32'] });
    dataDirs.push(inside.dataDir, outside.dataDir);
    for (const daemon of [inside, outside])
      expect((await api(daemon, 'POST', '/exports', { name: 'guarded', file: image })).status).toBe(201);

    expect(sha256(await readExport(inside.nbdUri('guarded')))).toBe(sha256(image));
    expect((await run('nbdinfo', [outside.nbdUri('guarded')])).code).not.toBe(0);

    const { json: connections } = await api(outside, 'GET', '/trpc/connections.list');
    expect(connections.result.data).toEqual([]);
    const { json: events } = await api(outside, 'GET', '/trpc/events.list');
    expect(events.result.data[0]).toMatchObject({
      type: 'connection.refused',
      details: { client: '127.0.0.1', reason: '127.0.0.1 is not in --nbd-allow' },
    });
  });

  it('serves an export only to clients in its own allow list, hiding it from the others', async () => {
    const daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    const image = makeImage(tempDir('nbdmux-images-'), 'listed.img', 1024 * 1024);
    const create = (name: string, allow?: unknown) =>
      api(daemon, 'POST', '/exports', { name, file: image, ...(allow !== undefined && { allow }) });
    expect((await create('lab-only', ['127.0.0.0/8'])).json.allow).toEqual(['127.0.0.0/8']);
    expect((await create('elsewhere', ['192.0.2.0/24', '2001:db8::/32'])).status).toBe(201);
    expect((await create('everyone')).json.allow).toEqual([]);

    expect(sha256(await readExport(daemon.nbdUri('lab-only')))).toBe(sha256(image));
    expect(sha256(await readExport(daemon.nbdUri('everyone')))).toBe(sha256(image));
    expect((await run('nbdinfo', [daemon.nbdUri('elsewhere')])).code).not.toBe(0);

    // Left out of this client's config: unknown to it, so no prerun ever asks for a verdict.
    expect((await listExports(daemon.nbdUri())).sort()).toEqual(['everyone', 'lab-only']);
    const { json: events } = await api(daemon, 'GET', '/trpc/events.list');
    // A refusal is policy, not a failure of nbd-server.
    expect((await api(daemon, 'GET', '/healthz')).status).toBe(200);
    expect(events.result.data.some((e: { type: string }) => e.type === 'nbd-server.failed')).toBe(false);

    const bad = await create('bad-range', ['10.0.0.0/8', 'not-a-range']);
    expect(bad.status).toBe(400);
    expect(bad.json.error.issues).toEqual([{ field: 'allow.1', message: 'must be an IP address or CIDR range, e.g. 10.1.0.0/16' }]);
  });

  it('refuses a malformed range at start-up with one clear line', async () => {
    await expect(startDaemon({ args: ['--nbd-allow', '10.0.0.0/33'] })).rejects.toThrow(
      /--nbd-allow: not an IP address or CIDR range: 10\.0\.0\.0\/33/,
    );
  });
});

function upgradeStatus(daemon: RunningDaemon, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${daemon.url.replace(/^http/, 'ws')}/trpc`, { headers });
    ws.on('unexpected-response', (_req, res) => (resolve(res.statusCode ?? 0), ws.terminate()));
    ws.on('open', () => (resolve(101), ws.close()));
    ws.on('error', () => {});
  });
}
