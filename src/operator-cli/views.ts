import type { NbdmuxConnection, NbdmuxExport, NbdmuxHealth, NbdmuxVersion } from '../client.js';
import { clientEndpoint, describeBoot, describeImport, explainMode, exportMode, importFraction } from '../presentation.js';
import { formatBytes, formatDuration, formatRate } from '../units.js';
import { formatTime } from './format.js';
import { renderFields, renderTable, type Column } from './table.js';

const exportColumns: Column<NbdmuxExport>[] = [
  { header: 'NAME', value: (e) => e.name },
  { header: 'STATE', value: stateCell },
  { header: 'MODE', value: exportMode },
  { header: 'VER', value: (e) => (e.version === null ? '-' : String(e.version)), alignRight: true },
  { header: 'SIZE', value: (e) => (e.size === null ? '-' : formatBytes(e.size)), alignRight: true },
  { header: 'CONNS', value: (e) => String(e.connections), alignRight: true },
  { header: 'FILE', value: (e) => e.file ?? '-' },
];

export function renderExports(exports: readonly NbdmuxExport[]): string {
  if (exports.length === 0) return 'no exports; add one with: nbdmux add NAME FILE\n';
  // A failure's reason is a sentence: whole, under the table, rather than stretching a column.
  const failures = exports.flatMap((e) =>
    e.import?.error ? [`${e.name}: version ${e.import.version} failed: ${e.import.error}; ${retry(e)}`] : [],
  );
  return renderTable(exportColumns, exports) + (failures.length === 0 ? '' : `\n${failures.join('\n')}\n`);
}

/** Where an import is, as the daemon reports it: `downloading 30%`, or its bytes while the total is unknown. */
function importStage(progress: NonNullable<NbdmuxExport['import']>): string {
  if (progress.stage === 'queued') return 'queued';
  const fraction = importFraction(progress);
  return `${progress.stage} ${fraction === null ? formatBytes(progress.bytes) : `${Math.floor(fraction * 100)}%`}`;
}

/** The export's state as the daemon reports it, with what an import of it is doing: `importing: converting 45%`, `serving, v3 downloading 2%`. */
function stateCell(exp: NbdmuxExport): string {
  const { import: progress } = exp;
  switch (exp.state) {
    case 'serving':
      if (progress === null) return 'serving';
      return `serving, v${progress.version} ${progress.error === null ? importStage(progress) : 'failed'}`;
    case 'importing':
      return progress === null ? 'importing' : `importing: ${importStage(progress)}`;
    case 'failed':
      return 'failed';
    case 'draining':
      return 'removed, draining';
  }
}

function retry(exp: NbdmuxExport): string {
  return `"nbdmux import ${exp.name} URL" tries again`;
}

export function renderExport(exp: NbdmuxExport): string {
  return renderFields([
    ['name', exp.name],
    ['state', describeState(exp)],
    ['version', exp.version === null ? '-' : String(exp.version)],
    ['file', exp.file ?? '-'],
    ...(exp.import ? [['import', `${exp.import.url}: ${describeImport(exp.import)}`] as const] : []),
    ...(exp.fileChange
      ? [
          [
            'file changed',
            `${formatTime(exp.fileChange.seenAt)}: the path leads to ${exp.fileChange.pathLeadsTo}; serving ${exp.fileChange.serving}`,
          ] as const,
        ]
      : []),
    ['mode', explainMode(exp)],
    ['allow', exp.allow.length === 0 ? 'every client the NBD port admits' : exp.allow.join(', ')],
    ['size', exp.size === null ? '-' : `${formatBytes(exp.size)} (${exp.size} bytes)`],
    ['boot', describeBoot(exp)],
    ['kernel args', exp.cmdline === '' ? '(none)' : exp.cmdline],
    ['created', formatTime(exp.createdAt)],
    ['connections', String(exp.connections)],
  ]);
}

/** The export's state with what it means for its clients. */
function describeState(exp: NbdmuxExport): string {
  switch (exp.state) {
    case 'serving':
      return stateCell(exp);
    case 'importing':
      return `${stateCell(exp)} (no version is ready yet: no client can attach it)`;
    case 'failed':
      return `failed: ${exp.import?.error ?? 'its import failed'} (no version is ready: no client can attach it; ${retry(exp)})`;
    case 'draining':
      return `removed at ${formatTime(exp.removedAt!)}, draining (its live connections finish)`;
  }
}

const versionColumns: Column<NbdmuxVersion>[] = [
  { header: 'VER', value: (v) => String(v.version), alignRight: true },
  { header: 'CURRENT', value: (v) => (v.current ? '*' : '') },
  { header: 'STATE', value: (v) => v.state },
  { header: 'SIZE', value: (v) => (v.size === null ? '-' : formatBytes(v.size)), alignRight: true },
  { header: 'CONNS', value: (v) => String(v.connections), alignRight: true },
  { header: 'CREATED', value: (v) => formatTime(v.createdAt) },
  { header: 'SOURCE', value: (v) => [v.url ?? v.file ?? '-', v.error ? `(${v.error})` : ''].filter(Boolean).join(' ') },
];

export function renderVersions(versions: readonly NbdmuxVersion[]): string {
  return renderTable(versionColumns, versions);
}

const connectionColumns: Column<NbdmuxConnection>[] = [
  { header: 'ID', value: (c) => String(c.id), alignRight: true },
  { header: 'EXPORT', value: (c) => c.exportName ?? '-' },
  { header: 'CLIENT', value: clientEndpoint },
  { header: 'PID', value: (c) => (c.pid === null ? '-' : String(c.pid)), alignRight: true },
  { header: 'OPENED', value: (c) => formatTime(c.openedAt) },
  { header: 'FOR', value: (c) => formatDuration(c.openedAt, c.closedAt), alignRight: true },
  { header: 'SENT', value: (c) => formatBytes(c.bytesSent), alignRight: true },
  { header: 'STATE', value: connectionState },
];

function connectionState(c: NbdmuxConnection): string {
  if (c.live) return c.bytesPerSecond > 0 ? `live ${formatRate(c.bytesPerSecond)}` : 'live';
  const how = c.signal ?? (c.exitCode !== null && c.exitCode !== 0 ? `exit ${c.exitCode}` : null);
  return [c.outcome ?? 'closed', how].filter(Boolean).join(' ');
}

export function renderConnections(connections: readonly NbdmuxConnection[], live: boolean): string {
  if (connections.length === 0) return live ? 'no live connections\n' : 'no connections yet\n';
  return renderTable(connectionColumns, connections);
}

export function renderHealth(health: NbdmuxHealth): string {
  const where = health.nbdListening ? `NBD on ${health.nbdAddress}:${health.nbdPort}` : 'NBD listener down';
  const server = health.nbdServerVersion ? `nbd-server ${health.nbdServerVersion}` : 'nbd-server not runnable';
  const summary = `${health.ok ? 'ok' : 'NOT OK'}: ${where}, ${server}${health.fastStart ? '' : `, fast start off (${health.fastStartReason})`}\n`;
  return summary + health.problems.map((problem) => `  - ${problem}\n`).join('');
}
