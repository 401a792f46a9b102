import Database from 'better-sqlite3';
import http from 'node:http';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultThrottleLimits } from '../src/auth/throttle.js';
import { attemptLogin, logIn } from './helpers/auth.js';
import { killEverything, startDaemon, type RunningDaemon } from '../testkit/daemon.js';

const password = 'correct horse battery staple';

/** A request from a chosen loopback source address (fetch cannot pick one); its body follows once `sendBody` resolves. */
function requestFrom(
  localAddress: string,
  daemon: RunningDaemon,
  method: string,
  route: string,
  headers: Record<string, string>,
  body = '',
  sendBody: Promise<unknown> = Promise.resolve(),
): Promise<{ status: number; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${daemon.url}${route}`, { method, headers, localAddress }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'] }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer from ${daemon.url}${route} in 10 s`)));
    req.flushHeaders();
    void sendBody.then(() => req.end(body));
  });
}

function guessFrom(localAddress: string, daemon: RunningDaemon, guess: string, sendBody?: Promise<unknown>) {
  const body = new URLSearchParams({ password: guess }).toString();
  return requestFrom(
    localAddress,
    daemon,
    'POST',
    '/login',
    { origin: daemon.url, 'content-type': 'application/x-www-form-urlencoded' },
    body,
    sendBody,
  );
}

describe('auth hardening', () => {
  const dataDirs: string[] = [];
  afterAll(() => killEverything(dataDirs));

  it('keeps a logged-out session revoked across a restart, and prunes revocations of expired sessions', async () => {
    // No NBDMUX_SESSION_SECRET: the generated one in the data dir signs cookies across restarts.
    const env = { NBDMUX_ADMIN_PASSWORD: password };
    let daemon = await startDaemon({ env });
    dataDirs.push(daemon.dataDir);
    const loggedOut = await logIn(daemon, password);
    const kept = await logIn(daemon, password);
    const logout = await fetch(`${daemon.url}/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: loggedOut, origin: daemon.url },
    });
    expect(logout.status).toBe(303);
    const status = async (cookie: string) => (await fetch(`${daemon.url}/exports`, { headers: { cookie } })).status;
    expect(await status(loggedOut)).toBe(401);

    expect(await daemon.stop()).toBe(0);
    daemon = await startDaemon({ dataDir: daemon.dataDir, env });
    expect([await status(loggedOut), await status(kept)]).toEqual([401, 200]);

    // A revocation whose session has expired anyway is dropped at the next start.
    expect(await daemon.stop()).toBe(0);
    const stateDb = path.join(daemon.dataDir, 'state.db');
    const db = new Database(stateDb);
    db.prepare('INSERT INTO revoked_sessions (id, expires_at) VALUES (?, ?)').run('long-expired', Date.now() - 1000);
    db.close();
    daemon = await startDaemon({ dataDir: daemon.dataDir, env });
    const reader = new Database(stateDb, { readonly: true });
    const ids = (reader.prepare('SELECT id FROM revoked_sessions').all() as Array<{ id: string }>).map((row) => row.id);
    reader.close();
    expect(ids).toHaveLength(1);
    expect(ids).not.toContain('long-expired');
    expect(await status(loggedOut)).toBe(401);
  });

  it(`refuses every password check with 429 after ${defaultThrottleLimits.total} failures from as many addresses, while sessions keep working`, async () => {
    const daemon = await startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: password } });
    dataDirs.push(daemon.dataDir);
    const session = await logIn(daemon, password);
    const { total } = defaultThrottleLimits;

    // Twice the bound, one guess per address, so each stays far below its own limit; all at once:
    // every request's headers are in before any body, as an attacker holding them back would do.
    const addresses = Array.from({ length: 2 * total }, (_, i) => `127.0.0.${i + 2}`);
    const headersIn = new Promise((resolve) => setTimeout(resolve, 500));
    const guesses = await Promise.all(addresses.map((address) => guessFrom(address, daemon, `guess ${address}`, headersIn)));
    const statuses = guesses.map((g) => g.status);
    expect(statuses.filter((s) => s === 401)).toHaveLength(total);
    expect(statuses.filter((s) => s === 429)).toHaveLength(total);
    expect(guesses.find((g) => g.status === 429)!.retryAfter).toMatch(/^[1-9]\d*$/);

    // From a fresh address the right password is refused as well, so a refusal tells nothing.
    expect((await guessFrom('127.0.0.201', daemon, password)).status).toBe(429);
    const bearer = await requestFrom('127.0.0.202', daemon, 'GET', '/exports', { authorization: `Bearer ${password}` });
    expect(bearer.status).toBe(429);
    const refusal = (await fetch(`${daemon.url}/exports`, { headers: { authorization: `Bearer ${password}` } }).then((r) => r.json())) as {
      error: { message: string };
    };
    expect(refusal.error.message).toMatch(/from all addresses.*logged-in sessions keep working/);
    // A session from before keeps working, and the page tells the operator why password login does not.
    expect((await fetch(`${daemon.url}/exports`, { headers: { cookie: session } })).status).toBe(200);
    expect(await (await attemptLogin(daemon, password)).text()).toMatch(/Too many failed attempts from all addresses/);
  });
});
