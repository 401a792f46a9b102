import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { api, killEverything, startDaemon, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { rssBytes } from '../testkit/proc.js';

interface OpenedSocket {
  ws: WebSocket;
  localAddress: string;
  /** Set once the daemon closed it. */
  closedWith: { code: number; reason: string } | null;
}

/** Opens an idle WebSocket to /trpc from `localAddress`: it subscribes to nothing and sends nothing. */
function openIdleWebSocket(daemon: RunningDaemon, localAddress: string): Promise<OpenedSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${daemon.url.replace(/^http/, 'ws')}/trpc`, { localAddress });
    const opened: OpenedSocket = { ws, localAddress, closedWith: null };
    ws.on('close', (code, reason) => (opened.closedWith = { code, reason: reason.toString() }));
    ws.on('error', reject);
    ws.once('open', () => resolve(opened));
  });
}

describe('a cap on open WebSockets', () => {
  let daemon: RunningDaemon;
  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--max-websockets', '200', '--max-websockets-per-client', '16'] });
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('refuses 800 of 1000 idle WebSockets with 1013 and the reason, keeps memory bounded, and admits again once some close', async () => {
    const pid = daemon.child.pid!;
    const rssBefore = rssBytes(pid);
    // 50 addresses with 20 sockets each, one address after the other: the first ones meet the per-address cap, the rest the total.
    const addresses = Array.from({ length: 50 }, (_, i) => `127.0.3.${i + 1}`);
    const sockets: OpenedSocket[] = [];
    for (let batch = 0; batch < 10; batch++) {
      sockets.push(
        ...(await Promise.all(
          Array.from({ length: 100 }, (_, i) => openIdleWebSocket(daemon, addresses[Math.floor((batch * 100 + i) / 20)]!)),
        )),
      );
    }
    await waitFor('800 refusals', () => (sockets.filter((s) => s.closedWith !== null).length >= 800 ? true : undefined), 15_000);
    const rssAfter = rssBytes(pid);
    console.log(
      `daemon RSS: ${(rssBefore / 2 ** 20).toFixed(1)} MiB before, ${(rssAfter / 2 ** 20).toFixed(1)} MiB with 200 open and 800 refused`,
    );

    const open = sockets.filter((s) => s.closedWith === null);
    const refused = sockets.filter((s) => s.closedWith !== null);
    expect(open).toHaveLength(200);
    for (const address of addresses) expect(open.filter((s) => s.localAddress === address).length).toBeLessThanOrEqual(16);
    const perClient = /^too many WebSockets from 127\.0\.3\.\d+: close some \(--max-websockets-per-client 16\)$/;
    const total = /^nbdmux has 200 WebSockets open, its limit: try again later \(--max-websockets\)$/;
    for (const { closedWith } of refused) {
      expect(closedWith!.code).toBe(1013);
      expect(closedWith!.reason).toMatch(new RegExp(`${perClient.source}|${total.source}`));
    }
    expect(refused.some((s) => perClient.test(s.closedWith!.reason))).toBe(true);
    expect(refused.some((s) => total.test(s.closedWith!.reason))).toBe(true);
    expect(rssAfter - rssBefore).toBeLessThan(64 * 2 ** 20);
    expect((await api(daemon, 'GET', '/healthz')).status).toBe(200);
    expect(daemon.output().match(/refusing WebSockets/g), 'logged once a minute, not per refusal').toHaveLength(1);

    // Closing ten of them makes room for ten more, from an address not seen before.
    for (const { ws } of open.slice(0, 10)) ws.close();
    const admitted = await waitFor('the daemon to count the closed sockets', async () => {
      const newcomer = await openIdleWebSocket(daemon, '127.0.3.99');
      await new Promise((resolve) => setTimeout(resolve, 200));
      if (newcomer.closedWith === null) return newcomer;
      return undefined;
    });
    for (const { ws } of [...sockets, admitted]) ws.terminate();
  }, 60_000);
});
