import { isNbdmuxError, type NbdmuxClient, type NbdmuxExport } from '../client.js';
import { describeImport, importFraction } from '../presentation.js';
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
  const started = existing
    ? await client.exports.update.mutate({ name: name!, ...source })
    : await client.exports.create.mutate({ name: name!, ...source, readonly: !rw, cow, allow });
  const version = started.import!.version;
  const progress = json ? null : process.stdout.isTTY ? new Bar(process.stdout) : new PlainLines(out);
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
    else
      out.write(
        `imported version ${version} of ${name}${exp.version === version ? ', now serving' : `; version ${exp.version} still serves (newer)`}\n`,
      );
    return exitCodes.ok;
  }
}

type Progress = NonNullable<NbdmuxExport['import']>;

/**
 * One line redrawn in place: `[#########-----] downloading 12.0 MiB of 40.0 MiB (30%), ...`.
 * Its own sequences go to the terminal as they are, the daemon's words written out.
 */
class Bar {
  constructor(private readonly terminal: Pick<NodeJS.WritableStream, 'write'>) {}

  show(progress: Progress): void {
    const fraction = importFraction(progress);
    const filled = fraction === null ? 0 : Math.round(fraction * barWidth);
    this.terminal.write(`\r\x1b[2K[${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}] ${cleanText(describeImport(progress))}`);
  }

  end(): void {
    this.terminal.write('\r\x1b[2K');
  }
}

/** For logs and pipes: a line at every stage change, and every few seconds meanwhile. */
class PlainLines {
  private stage = '';
  private lastAt = 0;

  constructor(private readonly out: Output) {}

  show(progress: Progress): void {
    const now = Date.now();
    if (progress.stage === this.stage && now - this.lastAt < plainLineEveryMs) return;
    this.stage = progress.stage;
    this.lastAt = now;
    this.out.write(`${describeImport(progress)}\n`);
  }

  end(): void {}
}
