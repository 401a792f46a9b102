import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, startNbdshSession } from '../testkit/nbd.js';

const password = 'metrics-test-password';
const imageBytes = 4 << 20;

/** Every sample of a scrape, keyed `name{labels}` exactly as Prometheus' text format writes it. */
function parseSamples(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

describe('GET /metrics', () => {
  let daemon: RunningDaemon;
  let images: string;
  const asAdmin = { authorization: `Bearer ${password}` };
  const scrape = async (): Promise<Map<string, number>> => {
    const response = await fetch(`${daemon.url}/metrics`, { headers: asAdmin });
    expect(response.status).toBe(200);
    return parseSamples(await response.text());
  };
  const rest = async (method: string, route: string, body?: unknown) => {
    const response = await fetch(daemon.url + route, {
      method,
      headers: { ...asAdmin, 'content-type': 'application/json' },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    expect(response.status, `${method} ${route}`).toBeLessThan(300);
  };

  beforeAll(async () => {
    images = tempDir('nbdmux-images-');
    makeImage(images, 'disk.img', imageBytes);
    makeImage(images, 'small.img', 64 << 10);
    daemon = await startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: password } });
    await rest('POST', '/exports', { name: 'disk', file: path.join(images, 'disk.img') });
  });
  afterAll(() => killEverything(daemon ? [daemon.dataDir] : []));

  it('answers only an authenticated caller, in the Prometheus text format', async () => {
    expect((await fetch(`${daemon.url}/metrics`)).status).toBe(401);
    const response = await fetch(`${daemon.url}/metrics`, { headers: asAdmin });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const samples = parseSamples(await response.text());
    // The process's own metrics, from prom-client's defaults.
    expect(samples.get('process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(samples.get('nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(samples.get('nbdmux_exports{state="serving"}')).toBe(1);
  });

  it('counts outcomes and negotiation times of real NBD reads, and bytes as the connection table has them', async () => {
    const before = await scrape();
    expect(await readExport(daemon.nbdUri('disk'))).toHaveLength(imageBytes);
    expect(await readExport(daemon.nbdUri('disk'))).toHaveLength(imageBytes);
    // nbdcopy may open several connections per copy: count what the connection table saw.
    const client = createNbdmuxClient({ url: daemon.url, password });
    const ended = await waitFor('both copies closed', async () => {
      const rows = await client.connections.list.query({ limit: 100 });
      return rows.length >= 2 && rows.every((row) => !row.live) ? rows : undefined;
    });
    const after = await scrape();
    const delta = (name: string) => after.get(name)! - (before.get(name) ?? 0);
    expect(ended.every((row) => row.outcome === 'closed' && row.exportName === 'disk')).toBe(true);
    expect(delta('nbdmux_connections_closed_total{outcome="closed"}')).toBe(ended.length);
    expect(after.get('nbdmux_connections_closed_total{outcome="failed"}')).toBe(0);
    expect(delta('nbdmux_negotiation_seconds_count')).toBe(ended.length);
    expect(delta('nbdmux_negotiation_seconds_sum')).toBeGreaterThan(0);
    expect(delta('nbdmux_bytes_sent_total{export="disk"}')).toBe(ended.reduce((sum, row) => sum + row.bytesSent, 0));
    expect(after.get('nbdmux_connections_live{export="disk"}')).toBe(0);
  }, 30_000);

  it('counts the bytes a live connection sends, and not again at its end; shows it and subscribers while they last', async () => {
    const before = (await scrape()).get('nbdmux_bytes_sent_total{export="disk"}')!;
    // A machine that read its whole disk and stays connected: bytes are sampled from /proc every
    // second while a connection lives (its process's /proc entry is gone once it has exited).
    const stopFile = path.join(images, 'stop-reader');
    const script = `
import os, time
size = h.get_size()
off = 0
while off < size:
    n = min(1 << 20, size - off); h.pread(n, off); off += n
print("read", flush=True)
while not os.path.exists(${JSON.stringify(stopFile)}):
    time.sleep(0.05)
`;
    const reader = startNbdshSession(daemon.nbdUri('disk'), script, 'read', stopFile);
    await reader.ready;
    const during = await waitFor('the bytes of the live connection', async () => {
      const samples = await scrape();
      return samples.get('nbdmux_bytes_sent_total{export="disk"}')! - before >= imageBytes ? samples : undefined;
    });
    expect(during.get('nbdmux_connections_live{export="disk"}')).toBe(1);

    const client = createNbdmuxClient({ url: daemon.url, password });
    const subscription = client.events.stream.subscribe({}, { onData: () => {} });
    await waitFor('one subscriber', async () => ((await scrape()).get('nbdmux_event_subscribers') === 1 ? true : undefined));
    subscription.unsubscribe();
    await waitFor('no subscriber', async () => ((await scrape()).get('nbdmux_event_subscribers') === 0 ? true : undefined));

    expect((await reader.finish()).code).toBe(0);
    const after = await waitFor('the reader closed', async () => {
      const samples = await scrape();
      return samples.get('nbdmux_connections_live{export="disk"}') === 0 ? samples : undefined;
    });
    // The close adds only what was sent since the last sample (the disconnect: a few bytes).
    expect(after.get('nbdmux_bytes_sent_total{export="disk"}')! - before).toBeGreaterThanOrEqual(imageBytes);
    expect(after.get('nbdmux_bytes_sent_total{export="disk"}')! - before).toBeLessThan(imageBytes + (64 << 10));
    expect(after.get('nbdmux_connections_closed_total{outcome="closed"}')).toBe(
      during.get('nbdmux_connections_closed_total{outcome="closed"}')! + 1,
    );
  }, 30_000);

  it('counts a connection taken over after a restart from what it sent since, not again from its start', async () => {
    const readAgain = path.join(images, 'read-again');
    const stopFile = path.join(images, 'stop-adopted');
    const readWhole = `
off = 0
while off < size:
    n = min(1 << 20, size - off); h.pread(n, off); off += n`;
    const script = `
import os, time
size = h.get_size()
${readWhole}
print("read", flush=True)
while not os.path.exists(${JSON.stringify(readAgain)}):
    time.sleep(0.05)
${readWhole}
while not os.path.exists(${JSON.stringify(stopFile)}):
    time.sleep(0.05)
`;
    const reader = startNbdshSession(daemon.nbdUri('disk'), script, 'read', stopFile);
    await reader.ready;
    // Its serving process outlives the daemon; the next one adopts it.
    expect(await daemon.stop()).toBe(0);
    daemon = await startDaemon({ dataDir: daemon.dataDir, env: { NBDMUX_ADMIN_PASSWORD: password } });
    const adopted = await scrape();
    expect(adopted.get('nbdmux_connections_live{export="disk"}')).toBe(1);
    expect(adopted.get('nbdmux_bytes_sent_total{export="disk"}')).toBe(0);

    fs.writeFileSync(readAgain, '');
    await waitFor('the second read, sampled', async () =>
      (await scrape()).get('nbdmux_bytes_sent_total{export="disk"}')! >= imageBytes ? true : undefined,
    );
    expect((await reader.finish()).code).toBe(0);
    const after = await waitFor('the adopted connection closed', async () => {
      const samples = await scrape();
      return samples.get('nbdmux_connections_live{export="disk"}') === 0 ? samples : undefined;
    });
    expect(after.get('nbdmux_bytes_sent_total{export="disk"}')).toBeLessThan(imageBytes + (64 << 10));
  }, 60_000);

  it('drops the series of removed exports and never labels by client address', async () => {
    const churn = Array.from({ length: 8 }, (_, i) => `churn-${i}`);
    for (const name of churn) {
      await rest('POST', '/exports', { name, file: path.join(images, 'small.img') });
      expect(await readExport(daemon.nbdUri(name))).toHaveLength(64 << 10);
    }
    const client = createNbdmuxClient({ url: daemon.url, password });
    await waitFor('the churn reads closed', async () =>
      (await client.connections.list.query({ live: true })).length === 0 ? true : undefined,
    );
    const whileServed = await scrape();
    for (const name of churn) expect(whileServed.has(`nbdmux_bytes_sent_total{export="${name}"}`)).toBe(true);
    for (const name of churn) await rest('DELETE', `/exports/${name}`);

    const response = await fetch(`${daemon.url}/metrics`, { headers: asAdmin });
    const text = await response.text();
    expect(text).not.toContain('churn-');
    expect(text).not.toContain('127.0.0.1');
    const exportLabels = new Set([...text.matchAll(/export="([^"]*)"/g)].map((match) => match[1]));
    expect([...exportLabels]).toEqual(['disk']);
    expect(parseSamples(text).get('nbdmux_exports{state="serving"}')).toBe(1);
    fs.rmSync(images, { recursive: true, force: true });
  }, 60_000);
});
