import { TRPCClientError } from '@trpc/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppRouter } from '../src/router/index.js';
import { killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

describe('the typed tRPC client', () => {
  let daemon: RunningDaemon;
  let client: ReturnType<typeof trpcClient>;
  beforeAll(async () => {
    daemon = await startDaemon();
    client = trpcClient(daemon.url);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('registers an export that serves its bytes, and lists, gets and deletes it', async () => {
    const image = makeImage(tempDir('nbdmux-images-'), 'typed.img', 1536 * 1024);
    const created = await client.exports.create.mutate({ name: 'typed', file: image });
    expect(created).toMatchObject({ name: 'typed', readonly: true, size: 1536 * 1024, state: 'serving', connections: 0 });

    expect(sha256(await readExport(daemon.nbdUri('typed')))).toBe(sha256(image));
    expect((await client.exports.list.query()).map((e) => e.name)).toEqual(['typed']);
    expect((await client.exports.get.query({ name: 'typed' })).file).toBe(created.file);

    expect(await client.exports.delete.mutate({ name: 'typed' })).toEqual({ name: 'typed', killed: 0, draining: 0 });
    expect((await run('nbdinfo', [daemon.nbdUri('typed')])).code).not.toBe(0);
  });

  it('throws typed errors carrying the code, the message and the fields at fault', async () => {
    const error = await client.exports.create.mutate({ name: 'bad name', file: 'relative.img' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TRPCClientError);
    const { data, message } = error as TRPCClientError<AppRouter>;
    expect(data?.code).toBe('BAD_REQUEST');
    expect(data?.httpStatus).toBe(400);
    expect(data?.issues?.map((i) => i.field)).toEqual(['name', 'file']);
    expect(message).toMatch(/^name: must be 1 to 64 characters/);

    const missing = (await client.exports.get.query({ name: 'absent' }).catch((e: unknown) => e)) as TRPCClientError<AppRouter>;
    // The message words the remedy as REST does; the data carries it for a client to word its own way.
    expect([missing.data?.code, missing.message, missing.data?.problem, missing.data?.remedy]).toEqual([
      'NOT_FOUND',
      'no export named "absent"; GET /exports lists them',
      'no export named "absent"',
      { kind: 'list-exports' },
    ]);
  });

  it('reports the data plane health', async () => {
    const health = await client.system.health.query();
    expect(health).toMatchObject({ ok: true, problems: [], nbdListening: true, nbdPort: daemon.nbdPort });
    expect(health.nbdServerVersion).toMatch(/^3\.\d+/);
  });
});
