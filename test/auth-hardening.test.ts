import Database from 'better-sqlite3';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { logIn } from './helpers/auth.js';
import { killEverything, startDaemon } from './helpers/daemon.js';

const password = 'correct horse battery staple';

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
    const logout = await fetch(`${daemon.url}/logout`, { method: 'POST', redirect: 'manual', headers: { cookie: loggedOut, origin: daemon.url } });
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
});
