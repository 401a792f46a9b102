/**
 * How the CLI and the dashboard show exports, connections, byte counts and durations: the words
 * and numbers are written once, here. Imported by the Node CLI and bundled into the page, so it
 * must not import anything Node-only (types from the client are erased).
 */
import type { NbdmuxConnection, NbdmuxExport, NbdmuxMachine } from './client.js';
import { formatBytes, formatDuration, formatRate } from './units.js';

export type ExportMode = 'ro' | 'rw' | 'cow';

/** How the export's clients may write: not at all, to the image itself, or each to its own private copy. */
export function exportMode(exp: Pick<NbdmuxExport, 'readonly' | 'cow'>): ExportMode {
  return exp.cow ? 'cow' : exp.readonly ? 'ro' : 'rw';
}

const modeWords: Record<ExportMode, { name: string; meaning?: string }> = {
  ro: { name: 'read-only' },
  rw: { name: 'read-write', meaning: 'clients write the image' },
  cow: { name: 'copy-on-write', meaning: 'each client writes its own discarded copy' },
};

/** The mode in a word: `read-only`, `read-write`, `copy-on-write`. */
export function describeMode(exp: Pick<NbdmuxExport, 'readonly' | 'cow'>): string {
  return modeWords[exportMode(exp)].name;
}

/** The mode with what it means for the image: `read-write (clients write the image)`. */
export function explainMode(exp: Pick<NbdmuxExport, 'readonly' | 'cow'>): string {
  const { name, meaning } = modeWords[exportMode(exp)];
  return meaning ? `${name} (${meaning})` : name;
}

/** Where a connection comes from: `10.1.2.3:40112`. */
export function clientEndpoint(conn: Pick<NbdmuxConnection, 'clientAddress' | 'clientPort'>): string {
  return `${conn.clientAddress}:${conn.clientPort}`;
}

type ImportShown = NonNullable<NbdmuxExport['import']>;

/** How far an import is, 0 to 1; null while its total is unknown (no Content-Length, a stage just begun). */
export function importFraction(progress: Pick<ImportShown, 'bytes' | 'totalBytes'>): number | null {
  return progress.totalBytes ? Math.min(1, progress.bytes / progress.totalBytes) : null;
}

/**
 * An import in words: `downloading 12.0 MiB of 40.0 MiB (30%), 4.0 MiB/s, 7s left`, or why it
 * failed. `estimate: false` leaves out the time left, for a reader who knows the rate is not yet meaningful.
 */
export function describeImport(progress: ImportShown, { estimate = true }: { estimate?: boolean } = {}): string {
  if (progress.error !== null) return `version ${progress.version} failed: ${progress.error}`;
  const fraction = importFraction(progress);
  const amount = progress.totalBytes
    ? `${formatBytes(progress.bytes)} of ${formatBytes(progress.totalBytes)} (${Math.floor(fraction! * 100)}%)`
    : formatBytes(progress.bytes);
  const left =
    estimate && progress.totalBytes && progress.bytesPerSecond > 0
      ? `, ${formatDuration('1970-01-01T00:00:00Z', null, ((progress.totalBytes - progress.bytes) / progress.bytesPerSecond) * 1000)} left`
      : '';
  return `${progress.stage} ${amount}, ${formatRate(progress.bytesPerSecond)}${left}`;
}

/** Whether machines can boot the export from nbdmux, with what, and any fallback: `ready: Debian GNU/Linux 12, kernel 6.1.0-50-amd64, partition 2 (ext4)`. */
export function describeBoot({ boot }: Pick<NbdmuxExport, 'boot'>): string {
  const root = boot.partition === null ? boot.fstype : `partition ${boot.partition}${boot.fstype === null ? '' : ` (${boot.fstype})`}`;
  const facts = [boot.os, boot.kernel === null ? null : `kernel ${boot.kernel}`, root].filter((fact) => fact !== null);
  const what = boot.ready ? ['ready', facts.join(', ')].filter((part) => part !== '').join(': ') : 'not ready';
  return boot.reason === null ? what : `${what} (${boot.reason})`;
}

/** Where a machine's boot is: its stage, or `never booted` until it first asks for its script. */
export function describeStage({ stage }: Pick<NbdmuxMachine, 'stage'>): string {
  return stage ?? 'never booted';
}

/** Where a machine's value of a field comes from, as both the CLI and the dashboard say it: `from profile rack3`. */
export function describeSource(machine: Pick<NbdmuxMachine, 'sources' | 'profile'>, field: keyof NbdmuxMachine['sources']): string {
  const source = machine.sources[field];
  return source === 'profile' ? `from profile ${machine.profile}` : source === 'machine' ? 'its own' : 'the default';
}

/** What a machine boots: its export, or `none`, with why when its export was removed. */
export function describeMachineExport(machine: Pick<NbdmuxMachine, 'export' | 'exportProblem'>): string {
  return machine.export ?? (machine.exportProblem === null ? 'none' : `none: ${machine.exportProblem}`);
}
