import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataDirSpace } from '../src/db/data-dir-space.js';
import { exportsTable, exportVersionsTable } from '../src/db/schema.js';
import { EventLog } from '../src/events/event-log.js';
import { VersionImports } from '../src/exports/imports.js';
import type { ImportedImage } from '../src/images/pipeline.js';
import { ProgressMeter, progressIntervalMs, type ImportProgress } from '../src/images/progress.js';
import { createLogger } from '../src/log.js';
import { tempDir } from '../testkit/daemon.js';
import { makeTestImage, pack, serveFile, startImageServer, testImporter, type ImageServer } from '../testkit/image-fixtures.js';
import { memoryDatabase } from './helpers/db.js';

describe('an import whose image is complete, while it is taken in', () => {
  let server: ImageServer;
  let virtualSize: number;
  beforeAll(async () => {
    const work = tempDir('nbdmux-images-');
    const image = makeTestImage(work, 'disk.img', 4);
    virtualSize = 4 << 20;
    server = await startImageServer({ '/disk.qcow2': serveFile(await pack(image, 'qcow2')) });
  });
  afterAll(() => server.close());

  it('shows the stage it reached (converting, every byte), never a fresh "queued 0 B", and keeps it if taking it in fails', async () => {
    const db = memoryDatabase();
    const events = new EventLog(db, new DataDirSpace('/nonexistent', createLogger('error')));
    const { importer } = testImporter(tempDir('nbdmux-store-'));
    const imports = new VersionImports(db, events, importer, createLogger('error'));
    const exp = db.insert(exportsTable).values({ name: 'lab', readonly: true, createdAt: new Date().toISOString() }).returning().get();
    const version = db
      .insert(exportVersionsTable)
      .values({ exportId: exp.id, version: 1, state: 'importing', url: server.url('/disk.qcow2'), createdAt: new Date().toISOString() })
      .returning()
      .get();

    // `finish` is the registry's (pinning, switching versions): held open here, so the test can
    // look at the window that otherwise lasts milliseconds, and an operator's poll sometimes hits.
    let taken!: (image: ImportedImage) => void;
    let release!: () => void;
    const finishing = new Promise<ImportedImage>((resolve) => (taken = resolve));
    imports.start(
      'lab',
      version,
      { url: server.url('/disk.qcow2'), sha256: undefined },
      { actor: 'open', client: '127.0.0.1' },
      (image) => {
        taken(image);
        return new Promise<void>((resolve) => (release = resolve)).then(() => {
          throw new Error('the image store is gone');
        });
      },
    );
    await finishing;
    expect(imports.viewOf(version)).toMatchObject({ stage: 'converting', bytes: virtualSize, totalBytes: virtualSize, error: null });

    release();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const failed = db.select().from(exportVersionsTable).all()[0]!;
    expect(failed.state).toBe('failed');
    expect(imports.viewOf(failed)).toMatchObject({
      stage: 'converting',
      bytes: virtualSize,
      bytesPerSecond: 0,
      error: expect.stringMatching(/store is gone/),
    });
  });
});

describe('the progress meter', () => {
  it('reports what it had to skip at the end of the interval: a download that stalls after its first bytes shows them, and its total', async () => {
    const reports: ImportProgress[] = [];
    const meter = new ProgressMeter((progress) => reports.push(progress));
    // As the pipeline does: the stage, then its total once the response says it, then the first bytes; then nothing.
    meter.enter('downloading', 0, null);
    meter.enter('downloading', 0, 2 << 20);
    meter.update(4096);
    expect(reports.map((r) => [r.stage, r.bytes, r.totalBytes])).toEqual([['downloading', 0, null]]);
    await new Promise((resolve) => setTimeout(resolve, progressIntervalMs + 100));
    expect(reports.map((r) => [r.stage, r.bytes, r.totalBytes])).toEqual([
      ['downloading', 0, null],
      ['downloading', 4096, 2 << 20],
    ]);
    // Nothing new: nothing more.
    await new Promise((resolve) => setTimeout(resolve, progressIntervalMs + 100));
    expect(reports).toHaveLength(2);
  });
});
