import { and, eq } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { exportVersionsTable, type VersionRow } from '../db/schema.js';
import type { EventLog } from '../events/event-log.js';
import type { Actor } from '../model/event-map.js';
import type { Importer } from '../images/importer.js';
import type { ImportedImage } from '../images/pipeline.js';
import type { ImportProgress } from '../images/progress.js';
import { ImportError } from '../images/import-error.js';
import { errorText, type Logger } from '../log.js';
import { cleanText } from '../untrusted-text.js';

/** An import as the control plane shows it: where it is, or why it failed. */
export type ImportView = ImportProgress & { version: number; url: string; error: string | null };

interface Running {
  exportId: number;
  progress: ImportProgress;
  cancel(): void;
}

/**
 * The imports of export versions: starts each on the Importer, keeps its latest progress (in
 * memory: it changes a few times a second and is worthless after a restart), and records how it
 * ended. What a finished image becomes is the registry's call (`finish`).
 */
export class VersionImports {
  private readonly running = new Map<number, Running>();
  /** The last progress of imports that failed, so a failure still shows how far it got (until a restart). */
  private readonly ended = new Map<number, ImportProgress>();
  /** The last progress of complete imports whose image `finish` is taking in. */
  private readonly finishing = new Map<number, ImportProgress>();

  constructor(
    private readonly db: Db,
    private readonly events: EventLog,
    private readonly importer: Importer,
    private readonly log: Logger,
  ) {}

  /** Starts importing `version` (a row in state `importing`); `finish` takes the image once it is complete. */
  start(
    name: string,
    version: VersionRow,
    source: { url: string; sha256: string | undefined },
    actor: Actor,
    finish: (image: ImportedImage) => Promise<void>,
  ): void {
    // In place before the start: the Importer reports its first stages within `start` itself.
    const entry: Running = {
      exportId: version.exportId,
      progress: { stage: 'queued', bytes: 0, totalBytes: null, bytesPerSecond: 0, startedAt: new Date().toISOString() },
      cancel: () => {},
    };
    this.running.set(version.id, entry);
    const job = this.importer.start(
      { key: `${name}-v${version.version}`, url: source.url, ...(source.sha256 !== undefined && { sha256: source.sha256 }) },
      (progress) => {
        entry.progress = progress;
      },
    );
    entry.cancel = job.cancel;
    this.events.record('import.started', name, { id: version.exportId, version: version.version, url: source.url, ...actor });
    job.done
      .then(
        (image) => {
          // While `finish` moves the image in and switches to it, the version is still importing:
          // it shows the stage the import reached, not a fresh `queued 0 B`.
          this.finishing.set(version.id, entry.progress);
          this.running.delete(version.id);
          return finish(image)
            .catch((err: unknown) => this.fail(name, version, err))
            .finally(() => this.finishing.delete(version.id));
        },
        (err: unknown) => {
          const progress = this.running.get(version.id)?.progress;
          if (progress) this.ended.set(version.id, progress);
          this.running.delete(version.id);
          this.fail(name, version, err);
        },
      )
      .catch((err: unknown) => this.fail(name, version, err));
  }

  /** Cancels every running import of the export; each ends as `cancelled`. */
  cancelAll(exportId: number): number {
    let cancelled = 0;
    for (const entry of this.running.values()) {
      if (entry.exportId !== exportId) continue;
      entry.cancel();
      cancelled++;
    }
    return cancelled;
  }

  /** The import to show for a version in state `importing` or `failed`. */
  viewOf(version: VersionRow): ImportView {
    const progress = this.running.get(version.id)?.progress ??
      this.finishing.get(version.id) ??
      this.ended.get(version.id) ?? { stage: 'queued', bytes: 0, totalBytes: null, bytesPerSecond: 0, startedAt: version.createdAt };
    return {
      ...progress,
      bytesPerSecond: version.state === 'importing' ? progress.bytesPerSecond : 0,
      version: version.version,
      url: version.url ?? '',
      error: version.error,
    };
  }

  /**
   * At start: an import the last run did not finish cannot be resumed (its partial file is gone
   * with the Importer's leftovers), so it is marked failed, saying how to start it again.
   */
  failInterrupted(nameOf: (exportId: number) => string): void {
    const rows = this.db.select().from(exportVersionsTable).where(eq(exportVersionsTable.state, 'importing')).all();
    for (const row of rows) {
      const name = nameOf(row.exportId);
      this.fail(
        name,
        row,
        new ImportError('io', `nbdmux stopped during the import; import it again with PUT /exports/${name} {"url": ...}`),
        'interrupted',
      );
    }
    const leftovers = this.importer.removeLeftovers();
    if (leftovers.length > 0) this.log.warn('removed partial imports an earlier run left', { files: leftovers });
  }

  /** Marks the version failed (once) and says why, as `import.cancelled` or `import.failed`. */
  fail(name: string, version: VersionRow, err: unknown, reason?: 'interrupted'): void {
    const failure = err instanceof ImportError ? err : new ImportError('io', `the import failed: ${(err as Error).message}`);
    if (!(err instanceof ImportError)) this.log.error('import failed', { export: name, error: errorText(err) });
    // It can quote the server (its status line) and the image (a qcow2's backing file name, qemu-img's words on it).
    const error = cleanText(failure.message);
    const finishing = this.finishing.get(version.id);
    if (finishing) this.ended.set(version.id, finishing);
    const changed = this.db
      .update(exportVersionsTable)
      .set({ state: 'failed', error })
      .where(and(eq(exportVersionsTable.id, version.id), eq(exportVersionsTable.state, 'importing')))
      .run();
    if (changed.changes === 0) return;
    if (failure.reason === 'cancelled') this.events.record('import.cancelled', name, { id: version.exportId, version: version.version });
    else
      this.events.record('import.failed', name, {
        id: version.exportId,
        version: version.version,
        reason: reason ?? failure.reason,
        error,
      });
  }
}
