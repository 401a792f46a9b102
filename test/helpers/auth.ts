import { expect } from 'vitest';
import type { RunningDaemon } from '../../testkit/daemon.js';

/** POST /login as the login form does, from the daemon's own page. */
export async function attemptLogin(daemon: RunningDaemon, pw: string): Promise<Response> {
  return fetch(`${daemon.url}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { origin: daemon.url, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ password: pw }),
  });
}

/** Logs in and returns the session cookie as a `Cookie` header value. */
export async function logIn(daemon: RunningDaemon, pw: string): Promise<string> {
  const response = await attemptLogin(daemon, pw);
  expect(response.status).toBe(303);
  return response.headers.get('set-cookie')!.split(';')[0]!;
}
