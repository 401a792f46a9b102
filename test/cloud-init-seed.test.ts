import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { fakeKit } from './helpers/fake-kit.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A GET from the source address a lab machine would have. */
function get(daemon: RunningDaemon, route: string, from: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: daemon.httpPort, path: route, localAddress: from, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer to ${route} in 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

const [node1, node2, plain] = ['52:54:00:00:07:01', '52:54:00:00:07:02', '52:54:00:00:07:03'];
const secret = 'hunter2-very-secret-password';
const profileUserData = `## template: jinja\n#cloud-config\npassword: ${secret}\nruncmd:\n  - echo profile-marker {{ v1.local_hostname }}\n`;
const ownUserData = '#cloud-config\nruncmd:\n  - echo own-marker\n';

/**
 * The cloud-init fields and the seed route against the real daemon: validation, the address
 * rules of the state export, ETags, and secrets kept out of lists and events.
 */
describe('cloud-init seeds', () => {
  let daemon: RunningDaemon;

  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--ramboot-kit', fakeKit(Buffer.from('kernel'))] });
    const image = makeImage(tempDir('nbdmux-images-'), 'debian.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'debian', file: image })).status).toBe(201);
    await inspectedBoots(daemon);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('refuses a malformed or oversized document with a 400 naming the field and the line', async () => {
    const refused = async (body: object) => {
      const reply = await api(daemon, 'POST', '/profiles', { name: 'bad', ...body });
      expect(reply.status).toBe(400);
      return (reply.json as { error: { message: string } }).error.message;
    };
    expect(await refused({ userData: '#cloud-config\nruncmd:\n  - [echo, 1\npackages: []\n' })).toMatch(
      /^userData: is not valid YAML at line 4, column 1: /,
    );
    expect(await refused({ vendorData: '#cloud-config\na: 1\na: 2\n' })).toMatch(
      /^vendorData: is not valid YAML at line 3, column 1: Map keys must be unique/,
    );
    expect(await refused({ userData: 'runcmd: [true]\n' })).toMatch(/^userData: must start with the line "#cloud-config" .*\(line 1\)$/);
    expect(await refused({ userData: '## template: jinja\nruncmd: [true]\n' })).toMatch(/\(line 2\)$/);
    expect(await refused({ userData: '#cloud-config\n- a list\n' })).toMatch(/^userData: (must be a YAML mapping|is not valid YAML)/);
    expect(await refused({ networkConfig: 'version: 2\nethernets: {\n' })).toMatch(/^networkConfig: is not valid YAML at line \d+/);
    expect(await refused({ userData: `#cloud-config\nx: "${'a'.repeat(64 * 1024)}"\n` })).toMatch(
      /^userData: must be at most 64 KiB \(got 65556 bytes\)$/,
    );
    // The same rules for a machine's own.
    const machine = await api(daemon, 'POST', '/machines', { mac: plain, name: 'bad', userData: '#cloud-config\n: :\n  - x\n' });
    expect(machine.status).toBe(400);
    expect((machine.json as { error: { message: string } }).error.message).toMatch(/^userData: is not valid YAML at line \d+/);
    expect((await api(daemon, 'GET', '/profiles')).json).toEqual([]);
  });

  it('serves each machine its seed at its boot address alone, the same 404 for every other case, with an ETag', async () => {
    expect((await api(daemon, 'POST', '/profiles', { name: 'rack', export: 'debian', userData: profileUserData })).status).toBe(201);
    for (const [mac, name] of [
      [node1, 'node1'],
      [node2, 'node2'],
    ] as const)
      expect((await api(daemon, 'POST', '/machines', { mac, name, profile: 'rack' })).status).toBe(201);
    expect((await api(daemon, 'POST', '/machines', { mac: plain, name: 'plain', export: 'debian' })).status).toBe(201);
    // Each fetches its script from its own address: that is its boot now.
    for (const [mac, from] of [
      [node1, '127.0.0.2'],
      [node2, '127.0.0.3'],
      [plain, '127.0.0.4'],
    ] as const)
      expect((await get(daemon, `/boot.ipxe?mac=${mac}`, from)).status).toBe(200);

    const meta1 = await get(daemon, `/boot/seed/${node1}/meta-data`, '127.0.0.2');
    expect(meta1.status).toBe(200);
    expect(meta1.body).toMatch(/^instance-id: "nbdmux-[0-9a-f]{20}"\nlocal-hostname: "node1"\n$/);
    const meta2 = await get(daemon, `/boot/seed/${node2}/meta-data`, '127.0.0.3');
    expect(meta2.body).toContain('local-hostname: "node2"');
    expect(meta2.body).not.toBe(meta1.body.replace('node1', 'node2')); // the name is in the hash
    const user1 = await get(daemon, `/boot/seed/${node1}/user-data`, '127.0.0.2');
    expect(user1).toMatchObject({ status: 200, body: profileUserData });

    // ETag: a boot that holds the file gets 304.
    expect(meta1.headers.etag).toMatch(/^"/);
    const again = await get(daemon, `/boot/seed/${node1}/meta-data`, '127.0.0.2', { 'if-none-match': meta1.headers.etag! });
    expect(again).toMatchObject({ status: 304, body: '' });

    // Another address, an unknown MAC, a machine without a document, a file not set: one answer.
    const notFound = (reply: Reply, mac: string) => ({ status: reply.status, body: reply.body.replace(mac, 'MAC') });
    const other = notFound(await get(daemon, `/boot/seed/${node1}/user-data`, '127.0.0.4'), node1);
    expect(other.status).toBe(404);
    expect(notFound(await get(daemon, `/boot/seed/52:54:00:00:07:99/user-data`, '127.0.0.4'), '52:54:00:00:07:99')).toEqual(other);
    expect(notFound(await get(daemon, `/boot/seed/${plain}/user-data`, '127.0.0.4'), plain)).toEqual(other);
    expect(notFound(await get(daemon, `/boot/seed/${node2}/user-data`, '127.0.0.4'), node2)).toEqual(other);
    expect(other.body).not.toContain('node');
    expect((await get(daemon, `/boot/seed/${node1}/network-config`, '127.0.0.2')).status).toBe(404);
    // Never listed.
    expect((await get(daemon, `/boot/seed/`, '127.0.0.2')).status).not.toBe(200);
    expect((await get(daemon, `/boot/seed/${node1}`, '127.0.0.2')).status).not.toBe(200);
    // Its boot moved to another address: the old one gets nothing.
    expect((await get(daemon, `/boot.ipxe?mac=${node1}`, '127.0.0.5')).status).toBe(200);
    expect((await get(daemon, `/boot/seed/${node1}/meta-data`, '127.0.0.2')).status).toBe(404);
    expect((await get(daemon, `/boot/seed/${node1}/meta-data`, '127.0.0.5')).body).toBe(meta1.body);
  });

  it("merges a machine's own user-data with its profile's; the instance-id follows the effective configuration", async () => {
    const meta = async () => (await get(daemon, `/boot/seed/${node2}/meta-data`, '127.0.0.3')).body;
    const before = await meta();
    expect(await meta()).toBe(before);
    expect((await api(daemon, 'PATCH', `/machines/${node2}`, { userData: ownUserData })).status).toBe(200);
    const merged = (await get(daemon, `/boot/seed/${node2}/user-data`, '127.0.0.3')).body;
    const parts = merged.split(/^--nbdmux-seed-part/m);
    expect(parts[0]).toMatch(/^Content-Type: multipart\/mixed; boundary="nbdmux-seed-part"\n/);
    // The machine's first, then the profile's, merged so the machine's keys win and lists append to the profile's.
    expect(parts[1]).toMatch(/Content-Type: text\/cloud-config/);
    expect(Buffer.from(parts[1]!.split('\n\n')[1]!.replace(/\n/g, ''), 'base64').toString()).toBe(ownUserData);
    expect(parts[2]).toMatch(/Content-Type: text\/jinja2/);
    expect(parts[2]).toContain('Merge-Type: dict(no_replace,recurse_list)+list(prepend)+str()');
    expect(Buffer.from(parts[2]!.split('\n\n')[1]!.replace(/\n/g, ''), 'base64').toString()).toBe(profileUserData);
    const changed = await meta();
    expect(changed).not.toBe(before);

    // network-config and vendor-data: the machine's wins whole; one set serves the file.
    expect((await api(daemon, 'PATCH', '/profiles/rack', { networkConfig: 'version: 2\n' })).status).toBe(200);
    expect(await get(daemon, `/boot/seed/${node2}/network-config`, '127.0.0.3')).toMatchObject({ status: 200, body: 'version: 2\n' });
    expect((await api(daemon, 'PATCH', `/machines/${node2}`, { networkConfig: 'version: 1\n' })).status).toBe(200);
    expect((await get(daemon, `/boot/seed/${node2}/network-config`, '127.0.0.3')).body).toBe('version: 1\n');
    expect(await meta()).not.toBe(changed);
    // Back as it was: the same id again.
    for (const body of [{ networkConfig: null, userData: null }])
      expect((await api(daemon, 'PATCH', `/machines/${node2}`, body)).status).toBe(200);
    expect((await api(daemon, 'PATCH', '/profiles/rack', { networkConfig: null })).status).toBe(200);
    expect(await meta()).toBe(before);
  });

  it('keeps the documents out of lists and events, and the database 0600', async () => {
    expect((await api(daemon, 'GET', `/machines/${node2}`)).json).toMatchObject({ userData: null, sources: { userData: 'profile' } });
    expect((await api(daemon, 'GET', '/profiles/rack')).json).toMatchObject({ userData: profileUserData });
    const eventsRoute = `/trpc/events.list?input=${encodeURIComponent(JSON.stringify({ limit: 1000 }))}`;
    for (const route of ['/machines', '/profiles', eventsRoute]) {
      const listed = JSON.stringify((await api(daemon, 'GET', route)).json);
      expect(listed).not.toContain(secret);
      expect(listed).not.toContain('own-marker');
    }
    for (const route of ['/machines', '/profiles'])
      for (const view of (await api(daemon, 'GET', route)).json as object[])
        for (const field of ['userData', 'networkConfig', 'vendorData']) expect(view).not.toHaveProperty(field);
    const events = JSON.stringify((await api(daemon, 'GET', eventsRoute)).json);
    expect(events).toContain('"changed":["userData"]');
    const databases = fs.readdirSync(daemon.dataDir).filter((name) => name.startsWith('state.db'));
    expect(databases).toContain('state.db');
    for (const file of databases) expect((fs.statSync(path.join(daemon.dataDir, file)).mode & 0o777).toString(8)).toBe('600');
  });
});
