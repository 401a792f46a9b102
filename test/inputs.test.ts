import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';

/** The documented limit on a request body: 256 KiB. */
const maxBodyBytes = 256 * 1024;

interface Reply {
  status: number;
  headers: Headers;
  json: any;
}

interface Request {
  method: string;
  route: string;
  /** Sent as JSON with `content-type: application/json`. */
  json?: unknown;
  /** Sent as is, with `contentType`. */
  raw?: string;
  contentType?: string;
}

async function send(daemon: RunningDaemon, request: Request): Promise<Reply> {
  const headers: Record<string, string> = {};
  let body: string | undefined;
  if (request.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(request.json);
  } else if (request.raw !== undefined) {
    headers['content-type'] = request.contentType ?? 'application/json';
    body = request.raw;
  }
  const response = await fetch(daemon.url + request.route, { method: request.method, headers, body });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${request.method} ${request.route} answered ${response.status} with a body that is not JSON: ${JSON.stringify(text)}`);
  }
  return { status: response.status, headers: response.headers, json };
}

/** Every error, whatever its cause, has this one shape, so a client can handle all of them the same way. */
function expectErrorShape(json: any): void {
  expect(Object.keys(json)).toEqual(['error']);
  expect(Object.keys(json.error).every((key) => ['code', 'message', 'issues', 'problem', 'remedy'].includes(key))).toBe(true);
  expect(typeof json.error.code).toBe('string');
  expect(typeof json.error.message).toBe('string');
  expect(json.error.message.length).toBeGreaterThan(0);
  // A remedy comes as data with the message it was worded into: the problem, then what to do.
  expect(json.error.remedy === undefined).toBe(json.error.problem === undefined);
  if (json.error.remedy !== undefined) {
    expect(typeof json.error.remedy.kind).toBe('string');
    expect(json.error.message.startsWith(`${json.error.problem}; `)).toBe(true);
  }
  if (json.error.issues !== undefined) {
    expect(json.error.issues.length).toBeGreaterThan(0);
    for (const issue of json.error.issues) {
      expect(Object.keys(issue).sort()).toEqual(['field', 'message']);
      expect(typeof issue.field).toBe('string');
      expect(typeof issue.message).toBe('string');
    }
  }
}

/** A create request that would succeed but for its size: JSON whitespace pads it to exactly `bytes`. */
function paddedCreateBody(name: string, file: string, bytes: number): string {
  const head = `{"name":${JSON.stringify(name)},"file":${JSON.stringify(file)}`;
  return head + ' '.repeat(bytes - Buffer.byteLength(head) - 1) + '}';
}

/** Writes `request` on a fresh connection without ending it, and returns everything read until the server closes. */
function rawHttp(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no close within 10 s; got ${JSON.stringify(received)}`)));
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('utf8')));
    socket.on('error', reject);
    socket.on('close', () => resolve(received));
    socket.write(request);
  });
}

interface Snapshot {
  exports: unknown;
  config: Buffer;
}

async function snapshot(daemon: RunningDaemon): Promise<Snapshot> {
  const { status, json } = await api(daemon, 'GET', '/exports');
  expect(status).toBe(200);
  return { exports: json, config: fs.readFileSync(path.join(daemon.dataDir, 'nbd-server.conf')) };
}

async function expectNothingChanged(daemon: RunningDaemon, before: Snapshot): Promise<void> {
  const after = await snapshot(daemon);
  expect(after.exports).toEqual(before.exports);
  expect(after.config.equals(before.config), 'nbd-server.conf is byte-identical').toBe(true);
}

function createRequest(json: unknown): Request {
  return { method: 'POST', route: '/exports', json };
}

interface RefusalCase {
  title: string;
  request: () => Request;
  status: number;
  code: string;
  /** The field the error must name in `issues`; absent for errors about the request as a whole. */
  field?: string;
  message: RegExp;
  headers?: Record<string, string>;
}

async function expectRefused(daemon: RunningDaemon, refusal: RefusalCase): Promise<void> {
  const before = await snapshot(daemon);
  const { status, headers, json } = await send(daemon, refusal.request());
  expect({ status, code: json?.error?.code }).toEqual({ status: refusal.status, code: refusal.code });
  expectErrorShape(json);
  expect(json.error.message).toMatch(refusal.message);
  if (refusal.field !== undefined) {
    expect(json.error.issues.map((issue: { field: string }) => issue.field)).toContain(refusal.field);
    expect(json.error.message).toContain(`${refusal.field}: `);
  } else {
    expect(json.error.issues).toBeUndefined();
  }
  for (const [name, value] of Object.entries(refusal.headers ?? {})) expect(headers.get(name)).toBe(value);
  await expectNothingChanged(daemon, before);
}

describe('REST input validation with --image-root: each bad request is refused precisely and changes nothing', () => {
  let daemon: RunningDaemon;
  let images: string;
  let outside: string;
  let okImage: string;

  beforeAll(async () => {
    images = fs.realpathSync(tempDir('nbdmux-images-'));
    outside = fs.realpathSync(tempDir('nbdmux-outside-'));
    okImage = makeImage(images, 'ok.img', 64 * 1024);
    makeImage(outside, 'outside.img', 64 * 1024);
    fs.symlinkSync(path.join(outside, 'outside.img'), path.join(images, 'link-out.img'));
    fs.symlinkSync(okImage, path.join(images, 'link-in.img'));
    fs.chmodSync(makeImage(images, 'unreadable.img', 64 * 1024), 0o000);
    daemon = await startDaemon({ args: ['--image-root', images] });
    expect((await api(daemon, 'POST', '/exports', { name: 'existing', file: okImage })).status).toBe(201);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  const cases: RefusalCase[] = [
    {
      title: 'a name with a space',
      request: () => createRequest({ name: 'bad name', file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /1 to 64 characters/,
    },
    {
      title: 'a name with a bracket',
      request: () => createRequest({ name: 'a]b', file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /1 to 64 characters/,
    },
    {
      title: 'a name with a newline',
      request: () => createRequest({ name: 'a\nb', file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /1 to 64 characters/,
    },
    {
      title: 'a name with a percent sign',
      request: () => createRequest({ name: 'a%b', file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /1 to 64 characters/,
    },
    {
      title: 'the reserved name generic',
      request: () => createRequest({ name: 'generic', file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /reserved/,
    },
    {
      title: 'a name starting with __',
      request: () => createRequest({ name: '__nbdmux_placeholder', file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /starting with a letter or digit/,
    },
    {
      title: 'a 65-character name',
      request: () => createRequest({ name: 'a'.repeat(65), file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /1 to 64 characters/,
    },
    {
      title: 'an empty name',
      request: () => createRequest({ name: '', file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /1 to 64 characters/,
    },
    {
      title: 'a missing name',
      request: () => createRequest({ file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /: is required$/,
    },
    {
      title: 'a name that is not a string',
      request: () => createRequest({ name: 42, file: '/x.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /must be a string/,
    },
    {
      title: 'a missing file',
      request: () => createRequest({ name: 'nofile' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /^file: give either "file" \(an image on this host\) or "url" \(an image to import\), exactly one$/,
    },
    {
      title: 'a relative path',
      request: () => createRequest({ name: 'rel', file: 'images/ok.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /absolute path/,
    },
    {
      title: 'a path with a space',
      request: () => createRequest({ name: 'sp', file: '/srv/my disk.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /may only contain/,
    },
    {
      title: 'a path with %',
      request: () => createRequest({ name: 'pct', file: '/srv/%s.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /may only contain/,
    },
    {
      title: 'a path with #',
      request: () => createRequest({ name: 'hash', file: '/srv/a#b.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /may only contain/,
    },
    {
      title: 'a path with a backslash',
      request: () => createRequest({ name: 'bs', file: '/srv/a\\sb.img' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /may only contain/,
    },
    {
      title: 'a file that does not exist',
      request: () => createRequest({ name: 'missing', file: path.join(images, 'missing.img') }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /no such file/,
    },
    {
      title: 'a file outside the image root',
      request: () => createRequest({ name: 'outside', file: path.join(outside, 'outside.img') }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /outside the image roots/,
    },
    {
      title: '/dev/null, outside the image root',
      request: () => createRequest({ name: 'null', file: '/dev/null' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /outside the image roots/,
    },
    {
      title: 'a path that climbs out of the root with ..',
      request: () => createRequest({ name: 'climb', file: `${images}/../${path.basename(outside)}/outside.img` }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /outside\.img is outside the image roots/,
    },
    {
      title: 'a symlink inside the root that points outside it, judged on its real path',
      request: () => createRequest({ name: 'link-out', file: path.join(images, 'link-out.img') }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /outside-.*outside\.img is outside the image roots/,
    },
    {
      title: 'the image root itself, which is a directory and no file under it',
      request: () => createRequest({ name: 'root', file: images }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /outside the image roots/,
    },
    {
      title: 'a name already taken',
      request: () => createRequest({ name: 'existing', file: okImage }),
      status: 409,
      code: 'CONFLICT',
      message: /already exists/,
    },
    {
      title: 'an unknown field',
      request: () => createRequest({ name: 'extra', file: okImage, extra: 1 }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'extra',
      message: /unknown field/,
    },
    {
      title: 'readonly that is not a boolean',
      request: () => createRequest({ name: 'ro', file: okImage, readonly: 'yes' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'readonly',
      message: /true or false/,
    },
    {
      title: 'a body that is a JSON array',
      request: () => createRequest([{ name: 'arr', file: '/x.img' }]),
      status: 400,
      code: 'BAD_REQUEST',
      field: '(body)',
      message: /expected object/,
    },
    {
      title: 'a body that is JSON null',
      request: () => ({ method: 'POST', route: '/exports', raw: 'null' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: '(body)',
      message: /expected object/,
    },
    {
      title: 'a text/plain body',
      request: () => ({
        method: 'POST',
        route: '/exports',
        raw: JSON.stringify({ name: 'plain', file: okImage }),
        contentType: 'text/plain',
      }),
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
      message: /Content-Type: application\/json.*got text\/plain/,
      headers: { connection: 'close' },
    },
    {
      title: 'malformed JSON',
      request: () => ({ method: 'POST', route: '/exports', raw: '{"name": "x",' }),
      status: 400,
      code: 'PARSE_ERROR',
      message: /not valid JSON/,
    },
    {
      title: 'a valid create request padded with whitespace to the bound + 1 byte',
      request: () => ({ method: 'POST', route: '/exports', raw: paddedCreateBody('too-big', okImage, maxBodyBytes + 1) }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
      message: /larger than 262144 bytes/,
      headers: { connection: 'close' },
    },
    {
      title: 'DELETE of an unknown name',
      request: () => ({ method: 'DELETE', route: '/exports/no-such-export' }),
      status: 404,
      code: 'NOT_FOUND',
      message: /no export named "no-such-export"/,
    },
    {
      title: 'DELETE of an invalid name',
      request: () => ({ method: 'DELETE', route: '/exports/bad%20name' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'name',
      message: /1 to 64 characters/,
    },
    {
      title: 'DELETE with force=maybe, which must not remove the export',
      request: () => ({ method: 'DELETE', route: '/exports/existing?force=maybe' }),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'force',
      message: /true or false \(got "maybe"\)/,
    },
    {
      title: 'PUT on the collection',
      request: () => ({ method: 'PUT', route: '/exports' }),
      status: 405,
      code: 'METHOD_NOT_SUPPORTED',
      message: /PUT is not supported/,
      headers: { allow: 'GET, HEAD, POST' },
    },
    {
      title: 'PATCH on an export',
      request: () => ({ method: 'PATCH', route: '/exports/existing' }),
      status: 405,
      code: 'METHOD_NOT_SUPPORTED',
      message: /PATCH is not supported/,
      headers: { allow: 'GET, HEAD, PUT, DELETE' },
    },
  ];

  it.each(cases)('refuses $title', async (refusal) => {
    await expectRefused(daemon, refusal);
  });

  it('refuses a file this user cannot open, saying so', async () => {
    // Root opens any file whatever its mode; without the two capabilities that let it, root is
    // refused by the kernel as any other user is, so the suite shows the case as root too (as CI runs it).
    const unprivileged =
      process.getuid?.() === 0
        ? await startDaemon({ args: ['--image-root', images], wrapper: ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--'] })
        : daemon;
    try {
      await expectRefused(unprivileged, {
        title: 'an unreadable file',
        request: () => createRequest({ name: 'unreadable', file: path.join(images, 'unreadable.img') }),
        status: 400,
        code: 'BAD_REQUEST',
        field: 'file',
        message: /cannot be opened for reading: permission denied/,
      });
    } finally {
      if (unprivileged !== daemon) await unprivileged.stop();
    }
  });

  it('accepts a body of exactly the bound', async () => {
    const { status, json } = await send(daemon, {
      method: 'POST',
      route: '/exports',
      raw: paddedCreateBody('at-limit', okImage, maxBodyBytes),
    });
    expect([status, json.name]).toEqual([201, 'at-limit']);
  });

  it('refuses a body over the bound sent without a length, counted as it streams', async () => {
    const before = await snapshot(daemon);
    const body = paddedCreateBody('streamed', okImage, maxBodyBytes + 4096);
    // Raw chunked HTTP, and the last chunk never sent: fetch would keep writing after the server
    // closed, and an EPIPE on the client side would hide the 413 this test is about.
    const response = await rawHttp(
      daemon.httpPort,
      [
        'POST /exports HTTP/1.1',
        'host: 127.0.0.1',
        'content-type: application/json',
        'transfer-encoding: chunked',
        '',
        `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n`,
      ].join('\r\n'),
    );
    expect(response.split('\r\n')[0]).toBe('HTTP/1.1 413 Payload Too Large');
    expect(response).toContain('"code":"PAYLOAD_TOO_LARGE"');
    await expectNothingChanged(daemon, before);
  });

  it('validates the same way over tRPC, naming the field in error.data.issues', async () => {
    const body = { name: 'bad name', file: '/x' };
    const response = await fetch(`${daemon.url}/trpc/exports.create`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = (await response.json()) as any;
    expect(response.status).toBe(400);
    expect(json.error.data).toMatchObject({ code: 'BAD_REQUEST', httpStatus: 400, path: 'exports.create' });
    expect(json.error.data.issues.map((issue: { field: string }) => issue.field)).toEqual(['name']);
    const rest = await api(daemon, 'POST', '/exports', body);
    expect(json.error.data.issues).toEqual(rest.json.error.issues);
    expect(json.error.message).toBe(rest.json.error.message);
  });

  it("accepts a file inside the root whose name starts with '..'", async () => {
    const dotted = makeImage(images, '..dotted.img', 4096);
    const { status, json } = await api(daemon, 'POST', '/exports', { name: 'dotted', file: dotted });
    expect([status, json.file ?? json.error?.message]).toEqual([201, dotted]);
  });

  it('accepts a symlink inside the root that points inside it, and exports the real path', async () => {
    const before = await snapshot(daemon);
    const { status, json } = await api(daemon, 'POST', '/exports', { name: 'via-link', file: path.join(images, 'link-in.img') });
    expect(status).toBe(201);
    expect(json).toMatchObject({ name: 'via-link', file: okImage, size: 64 * 1024, readonly: true });
    const after = await snapshot(daemon);
    expect(after.exports).not.toEqual(before.exports);
    // Served from the descriptor opened on the real path at registration, which the config names.
    expect(after.config.toString()).toMatch(
      new RegExp(`^# ${okImage}, as judged at registration\n\\[via-link\\]\nexportname = /proc/self/fd/\\d+\n`, 'm'),
    );
    expect(after.config.toString()).not.toContain('link-in.img');
    const info = await run('nbdinfo', ['--size', daemon.nbdUri('via-link')]);
    expect([info.code, info.stdout.toString().trim()]).toEqual([0, String(64 * 1024)]);
  });
});

describe('REST input validation without --image-root: files nbd-server cannot serve are refused by kind', () => {
  let daemon: RunningDaemon;
  let dir: string;
  let socketServer: net.Server;

  beforeAll(async () => {
    dir = fs.realpathSync(tempDir('nbdmux-kinds-'));
    fs.mkdirSync(path.join(dir, 'subdir'));
    fs.writeFileSync(path.join(dir, 'empty.img'), '');
    const mkfifo = await run('mkfifo', [path.join(dir, 'fifo')]);
    expect(mkfifo.code).toBe(0);
    socketServer = net.createServer();
    await new Promise<void>((resolve, reject) => {
      socketServer.once('error', reject);
      socketServer.listen(path.join(dir, 'sock'), resolve);
    });
    daemon = await startDaemon();
  });
  afterAll(async () => {
    killEverything([daemon.dataDir]);
    await new Promise<void>((resolve) => socketServer.close(() => resolve()));
  });

  /** A create request for `file`, relative to the test dir unless absolute, under a valid name made from it. */
  const createRequestFor = (file: string) => (): Request =>
    createRequest({ name: file.replace(/[^A-Za-z0-9]/g, ''), file: path.isAbsolute(file) ? file : path.join(dir, file) });

  const cases: RefusalCase[] = [
    {
      title: 'a directory',
      request: createRequestFor('subdir'),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /subdir is a directory, not an image file or block device/,
    },
    { title: 'a FIFO', request: createRequestFor('fifo'), status: 400, code: 'BAD_REQUEST', field: 'file', message: /fifo is a FIFO/ },
    {
      title: 'a unix socket',
      request: createRequestFor('sock'),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /sock is a socket/,
    },
    {
      title: 'a character device',
      request: createRequestFor('/dev/null'),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /\/dev\/null is a character device/,
    },
    {
      title: 'an empty file',
      request: createRequestFor('empty.img'),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /empty\.img is empty/,
    },
    {
      title: 'a file that does not exist',
      request: createRequestFor('missing.img'),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /missing\.img: no such file/,
    },
    {
      title: 'a path through a regular file',
      request: createRequestFor('empty.img/disk.img'),
      status: 400,
      code: 'BAD_REQUEST',
      field: 'file',
      message: /not a directory/,
    },
  ];

  it.each(cases)('refuses $title', async (refusal) => {
    await expectRefused(daemon, refusal);
  });
});
