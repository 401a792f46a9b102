import type { NbdmuxConnection, NbdmuxExport, NbdmuxHealth, NbdmuxStreamEvent } from '../client.js';
import { clientEndpoint, describeBoot, explainMode, exportMode, formatBytes, formatDuration, formatRate } from '../presentation.js';
import { formatClock, formatDetails, formatTime } from './format.js';
import { renderFields, renderTable, type Column } from './table.js';

const exportColumns: Column<NbdmuxExport>[] = [
  { header: 'NAME', value: (e) => e.name },
  { header: 'STATE', value: (e) => e.state },
  { header: 'MODE', value: exportMode },
  { header: 'SIZE', value: (e) => formatBytes(e.size), alignRight: true },
  { header: 'CONNS', value: (e) => String(e.connections), alignRight: true },
  { header: 'FILE', value: (e) => e.file },
];

export function renderExports(exports: readonly NbdmuxExport[]): string {
  if (exports.length === 0) return 'no exports; add one with: nbdmux add NAME FILE\n';
  return renderTable(exportColumns, exports);
}

export function renderExport(exp: NbdmuxExport): string {
  return renderFields([
    ['name', exp.name],
    ['state', exp.state === 'serving' ? 'serving' : `draining since ${formatTime(exp.removedAt!)} (removed; live connections finish)`],
    ['file', exp.file],
    ...(exp.fileChange ? [['file changed', `${formatTime(exp.fileChange.seenAt)}: the path leads to ${exp.fileChange.pathLeadsTo}; serving ${exp.fileChange.serving}`] as const] : []),
    ['mode', explainMode(exp)],
    ['allow', exp.allow.length === 0 ? 'every client the NBD port admits' : exp.allow.join(', ')],
    ['size', `${formatBytes(exp.size)} (${exp.size} bytes)`],
    ['boot', describeBoot(exp)],
    ['kernel args', exp.cmdline === '' ? '(none)' : exp.cmdline],
    ['created', formatTime(exp.createdAt)],
    ['connections', String(exp.connections)],
  ]);
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
      return `${event.details.skipped} events missed, too many to replay: events.list (or the dashboard) has them`;
    case 'daemon.started':
    case 'daemon.stopped':
    case 'daemon.space-recovered':
    case 'export.created':
    case 'export.removed':
    case 'export.file-changed':
    case 'connection.opened':
    case 'connection.negotiated':
    case 'connection.closed':
    case 'connection.refused':
    case 'connection.adopted':
    case 'nbd-server.failed':
    case 'auth.login-succeeded':
    case 'auth.login-failed':
    case 'auth.logout':
    case 'boot.script':
    case 'boot.kernel':
    case 'boot.initrd':
      return formatDetails(event.details);
    default:
      return unknownEvent(event);
  }
}

/** A compile error when an event type has no case above; a newer daemon's event still prints, as its details. */
function unknownEvent(event: never): string {
  return formatDetails((event as NbdmuxStreamEvent).details);
}
