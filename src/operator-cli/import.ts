import { isNbdmuxError, type NbdmuxClient, type NbdmuxExport } from '../client.js';
import { describeImport, importFraction } from '../presentation.js';
import { formatBytes, formatDuration, formatRate } from '../units.js';
import { cleanText } from '../untrusted-text.js';
import type { Invocation } from './args.js';
import type { Output } from './output.js';
import { exitCodes } from './failure.js';

/** How often the daemon is asked how the import goes: its progress changes at most 4 times a second. */
const pollMs = 250;
/** Without a terminal, a progress line at most this often (and at every stage change). */
const plainLineEveryMs = 5000;
const barWidth = 30;
/**
 * The daemon measures a stage's rate over its last 2 s, from the stage's start: before a stage has
 * run this long its rate is a sample of a moment, and a time left from it misleads.
 */
export const estimateAfterMs = 3000;

/**
 * Imports URL as a new export NAME or, if NAME exists, as its next version; then follows the
 * import to its end: a bar redrawn in place on a terminal, plain lines otherwise (or, with
 * --json, the export once done). A failed import is an error: one line, exit 1.
 */
export async function importCommand(
  client: NbdmuxClient,
  { args: [name, url], sha256, rw, cow, allow, json }: Invocation,
  out: Output,
): Promise<number> {
  const source = { url: url!, ...(sha256 !== undefined && { sha256 }) };
  const existing = await client.exports.get.query({ name: name! }).catch((error: unknown) => {
    if (isNbdmuxError(error) && error.data?.code === 'NOT_FOUND') return null;
    throw error;
  });
  if (existing && (rw || cow || allow.length > 0)) {
    throw new Error(`${name} exists: the import becomes its next version, with its mode and allow list; drop --rw, --cow and --allow`);
  }
  const startedAt = Date.now();
  const started = existing
    ? await client.exports.update.mutate({ name: name!, ...source })
    : await client.exports.create.mutate({ name: name!, ...source, readonly: !rw, cow, allow });
  const version = started.import!.version;
  const text = new ProgressText();
  const progress = json ? null : process.stdout.isTTY ? new Bar(process.stdout, text) : new PlainLines(out, text);
  if (progress) out.write(`importing ${url} as version ${version} of ${name}\n`);
  for (;;) {
    const exp = await client.exports.get.query({ name: name! });
    if (exp.import?.version === version && exp.import.error === null) {
      progress?.show(exp.import);
      await new Promise((resolve) => setTimeout(resolve, pollMs));
      continue;
    }
    progress?.end();
    const imported = (await client.exports.versions.query({ name: name! })).find((v) => v.version === version);
    if (imported?.state !== 'ready' && imported?.state !== 'deleted') {
      throw new Error(`the import of version ${version} failed: ${imported?.error ?? `it is ${imported?.state ?? 'gone'}`}`);
    }
    if (json) out.write(`${JSON.stringify(exp, null, 2)}\n`);
    else {
      const serving = exp.version === version ? ', now serving' : `; version ${exp.version} still serves (newer)`;
      out.write(`imported version ${version} of ${name}: ${importSummary(imported.size, Date.now() - startedAt)}${serving}\n`);
    }
    return exitCodes.ok;
  }
}

type Progress = NonNullable<NbdmuxExport['import']>;

/** What an import came to: `3.0 MiB in 1.4s (2.1 MiB/s)`; the size is the image's, as it serves. */
export function importSummary(size: number | null, elapsedMs: number): string {
  const seconds = Math.max(elapsedMs, 1) / 1000;
  const took = seconds < 60 ? `${seconds.toFixed(1)}s` : formatDuration(new Date(0).toISOString(), new Date(elapsedMs).toISOString());
  return size === null ? `in ${took}` : `${formatBytes(size)} in ${took} (${formatRate(Math.round(size / seconds))})`;
}

/** The progress in words, its time left held back until the stage has run long enough for its rate to mean something. */
export class ProgressText {
  private stage = '';
  private stageSeenAt = 0;

  text(progress: Progress, now = Date.now()): string {
    if (progress.stage !== this.stage) {
      this.stage = progress.stage;
      this.stageSeenAt = now;
    }
    return describeImport(progress, { estimate: now - this.stageSeenAt >= estimateAfterMs });
  }
}

/**
 * One line redrawn in place: `[#########-----] downloading 12.0 MiB of 40.0 MiB (30%), ...`.
 * Its own sequences go to the terminal as they are, the daemon's words written out.
 */
class Bar {
  constructor(
    private readonly terminal: Pick<NodeJS.WritableStream, 'write'>,
    private readonly words: ProgressText,
  ) {}

  show(progress: Progress): void {
    const fraction = importFraction(progress);
    const filled = fraction === null ? 0 : Math.round(fraction * barWidth);
    this.terminal.write(`\r\x1b[2K[${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}] ${cleanText(this.words.text(progress))}`);
  }

  end(): void {
    this.terminal.write('\r\x1b[2K');
  }
}

/** For logs and pipes: a line at every stage change, and every few seconds meanwhile. */
class PlainLines {
  private stage = '';
  private lastAt = 0;

  constructor(
    private readonly out: Output,
    private readonly words: ProgressText,
  ) {}

  show(progress: Progress): void {
    const now = Date.now();
    const line = this.words.text(progress, now);
    if (progress.stage === this.stage && now - this.lastAt < plainLineEveryMs) return;
    this.stage = progress.stage;
    this.lastAt = now;
    this.out.write(`${line}\n`);
  }

  end(): void {}
}
