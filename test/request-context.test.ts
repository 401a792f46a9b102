import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logIn } from './helpers/auth.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { httpRequest } from '../testkit/raw-http.js';
import { trpcClient } from './helpers/trpc.js';

const password = 'correct horse battery staple';

type Event = { type: string; exportName: string | null; details: Record<string, unknown> };

async function events(daemon: RunningDaemon): Promise<Event[]> {
  const response = await fetch(`${daemon.url}/trpc/events.list`, { headers: { authorization: `Bearer ${password}` } });
  return ((await response.json()) as { result: { data: Event[] } }).result.data;
}

describe('one context per request: who calls, as every procedure sees it', () => {
  let locked: RunningDaemon;
  let image: string;
  const dataDirs: string[] = [];

  beforeAll(async () => {
    locked = await startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: password } });
    dataDirs.push(locked.dataDir);
    image = makeImage(tempDir('nbdmux-images-'), 'context.img', 64 * 1024);
  });
  afterAll(() => killEverything(dataDirs));

  it('records who made each change and from where: the bearer password, or a session named as its login was', async () => {
    const created = await httpRequest(locked.httpPort, {
      method: 'POST',
      path: '/exports',
      localAddress: '127.0.0.2',
      headers: { authorization: `Bearer ${password}` },
      body: { name: 'by-bearer', file: image },
    });
    expect(created.status, created.text).toBe(201);

    const cookie = await logIn(locked, password);
    const removed = await fetch(`${locked.url}/trpc/exports.delete`, {
      method: 'POST',
      headers: { cookie, origin: locked.url, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'by-bearer' }),
    });
    expect(removed.status).toBe(200);

    const history = await events(locked);
    const login = history.find((e) => e.type === 'auth.login-succeeded')!;
    expect(login.details.actor).toMatch(/^session:[\w-]{8}$/);
    expect(history.find((e) => e.type === 'export.created')?.details).toMatchObject({ actor: 'bearer', client: '127.0.0.2' });
    expect(history.find((e) => e.type === 'export.removed')?.details).toMatchObject({ actor: login.details.actor, client: '127.0.0.1' });
  });

  it("records an open daemon's changes as made by anyone", async () => {
    const open = await startDaemon();
    dataDirs.push(open.dataDir);
    await trpcClient(open.url).exports.create.mutate({ name: 'by-anyone', file: image });
    const { json } = await api(open, 'GET', '/trpc/events.list');
    expect((json.result.data as Event[]).find((e) => e.type === 'export.created')?.details).toMatchObject({
      actor: 'open',
      client: '127.0.0.1',
    });
  });

  it('answers a refused procedure call with the status, headers and message of every other refusal', async () => {
    const anonymous = await fetch(`${locked.url}/trpc/exports.list`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toBe('Bearer realm="nbdmux"');
    expect(((await anonymous.json()) as { error: { message: string } }).error.message).toBe(
      'authentication required: send "Authorization: Bearer <admin password>", or log in at /',
    );

    const cookie = await logIn(locked, password);
    const crossSite = await fetch(`${locked.url}/trpc/exports.delete`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/json' },
      body: '{"name":"x"}',
    });
    expect(crossSite.status).toBe(403);
    expect(((await crossSite.json()) as { error: { message: string } }).error.message).toBe(
      'cross-site request refused: act from the nbdmux dashboard itself',
    );
  });

  it('refuses an unauthenticated call before reading its input', async () => {
    // Headers promise a body that never comes: only a refusal made before reading it can answer.
    const answered = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        `${locked.url}/trpc/exports.create`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': '60000' } },
        (res) => {
          res.resume();
          resolve(res.statusCode!);
          req.destroy();
        },
      );
      req.on('error', () => {}); // destroyed on purpose, once answered or timed out
      req.setTimeout(3000, () => (reject(new Error('no answer in 3 s: the body was waited for')), req.destroy()));
      req.flushHeaders();
    });
    expect(answered).toBe(401);
  });

  // Last: it throttles this address (127.0.0.1) for bearer passwords.
  it('answers a throttled caller 429 with when to try again, the right password included', async () => {
    const guess = (authorization: string) => fetch(`${locked.url}/trpc/exports.list`, { headers: { authorization } });
    for (let i = 0; i < 5; i++) expect((await guess('Bearer wrong')).status).toBe(401);
    const throttled = await guess(`Bearer ${password}`);
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
    expect(((await throttled.json()) as { error: { message: string } }).error.message).toMatch(
      /^too many failed attempts from this address: try again in \d+ s$/,
    );
  });
});
