import type { NbdmuxConnection, NbdmuxExport, NbdmuxHealth, NbdmuxStreamEvent, NbdmuxVersion } from '../client.js';
import { clientEndpoint, describeBoot, describeImport, explainMode, exportMode } from '../presentation.js';
import { formatBytes, formatDuration, formatRate } from '../units.js';
import { formatClock, formatDetails, formatTime } from './format.js';
import { renderFields, renderTable, type Column } from './table.js';

const exportColumns: Column<NbdmuxExport>[] = [
  { header: 'NAME', value: (e) => e.name },
  { header: 'STATE', value: (e) => e.state },
  { header: 'MODE', value: exportMode },
  { header: 'VER', value: (e) => (e.version === null ? '-' : String(e.version)), alignRight: true },
  { header: 'SIZE', value: (e) => (e.size === null ? '-' : formatBytes(e.size)), alignRight: true },
  { header: 'CONNS', value: (e) => String(e.connections), alignRight: true },
  { header: 'FILE', value: (e) => e.file ?? '-' },
];

export function renderExports(exports: readonly NbdmuxExport[]): string {
  if (exports.length === 0) return 'no exports; add one with: nbdmux add NAME FILE\n';
  return renderTable(exportColumns, exports);
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
      return 'serving';
    case 'importing':
      return 'importing (no version is ready yet: no client can attach it)';
    case 'failed':
      return `failed (its import failed, see import, and no version is ready: no client can attach it; "nbdmux import ${exp.name} URL" tries again)`;
    case 'draining':
      return `draining since ${formatTime(exp.removedAt!)} (removed; live connections finish)`;
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

export function renderEvent(event: NbdmuxStreamEvent): string {
  return [formatClock(event.at), event.type, event.exportName ?? '-', describeEvent(event)].join('  ');
}

/** Every stored event reads as its details, `key=value`, which scripts can pick apart; a new type must be placed here. */
function describeEvent(event: NbdmuxStreamEvent): string {
  switch (event.type) {
    case 'replay.skipped':
      return event.details.reason === 'pruned'
        ? `${event.details.skipped} events missed are gone: older than --retain-days, they were pruned`
        : `${event.details.skipped} events missed, too many to replay: events.list (or the dashboard) has them`;
    case 'daemon.started':
    case 'daemon.stopped':
    case 'daemon.space-recovered':
    case 'export.created':
    case 'export.version-switched':
    case 'import.started':
    case 'import.done':
    case 'import.failed':
    case 'import.cancelled':
    case 'export.removed':
    case 'export.file-changed':
    case 'connection.opened':
    case 'connection.negotiated':
    case 'connection.closed':
    case 'connection.refused':
    case 'connection.adopted':
    case 'nbd-server.failed':
    case 'nbd-server.recovered':
    case 'auth.login-succeeded':
    case 'auth.login-failed':
    case 'auth.logout':
    case 'boot.script':
    case 'boot.kernel':
    case 'boot.initrd':
    case 'machine.created':
    case 'machine.updated':
    case 'machine.deleted':
    case 'machine.reset':
    case 'machine.discovered':
      return formatDetails(event.details);
    case 'machine.stage': {
      // A report's lines (the timing of `root`) would break the one-line-per-event shape: its last line says enough.
      const { detail, ...rest } = event.details;
      return formatDetails(detail === undefined ? rest : { ...rest, detail: detail.split('\n').pop()! });
    }
    default:
      return unknownEvent(event);
  }
}

/** A compile error when an event type has no case above; a newer daemon's event still prints, as its details. */
function unknownEvent(event: never): string {
  return formatDetails((event as NbdmuxStreamEvent).details);
}
