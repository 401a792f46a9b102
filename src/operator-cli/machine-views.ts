import type { NbdmuxDiscoveredMachine, NbdmuxMachine } from '../client.js';
import { describeMachineExport, describeSource, describeStage } from '../presentation.js';
import { formatBytes, formatDuration } from '../units.js';
import { formatTime } from './format.js';
import { renderFields, renderTable, type Column } from './table.js';

const machineColumns: Column<NbdmuxMachine>[] = [
  { header: 'NAME', value: (m) => m.name },
  { header: 'MAC', value: (m) => m.mac },
  { header: 'PROFILE', value: (m) => m.profile ?? '-' },
  { header: 'EXPORT', value: (m) => m.export ?? (m.exportProblem === null ? '-' : '- (removed)') },
  { header: 'STATE', value: (m) => (m.persistent ? formatBytes(m.stateSize) : '-'), alignRight: true },
  { header: 'STAGE', value: describeStage },
  { header: 'SINCE', value: (m) => (m.stageAt === null ? '-' : formatDuration(m.stageAt, null)), alignRight: true },
  { header: 'ADDRESS', value: (m) => m.address ?? '-' },
  { header: 'SEEN', value: (m) => (m.lastSeenAt === null ? 'never' : formatTime(m.lastSeenAt)) },
];

export function renderMachines(machines: readonly NbdmuxMachine[]): string {
  if (machines.length === 0) return 'no machines; add one with: nbdmux machines add MAC NAME --export EXPORT\n';
  return renderTable(machineColumns, machines);
}

/** Every field, then the stages of its current boot, each with the time it took from the script. */
export function renderMachine(m: NbdmuxMachine): string {
  // Where each value comes from matters once a profile gives some: a machine in none sets all it has.
  const from = (field: keyof NbdmuxMachine['sources']) => (m.profile === null ? '' : ` (${describeSource(m, field)})`);
  const fields = renderFields([
    ['name', m.name],
    ['mac', m.mac],
    ...(m.profile === null ? [] : [['profile', m.profile] as const]),
    ['export', describeMachineExport(m) + from('export')],
    ['kernel args', (m.cmdline === '' ? '(none)' : m.cmdline) + from('cmdline')],
    [
      'persistent',
      (m.persistent
        ? `yes: ${formatBytes(m.stateSize)} (${m.stateSize} bytes) of state, exported as ${m.stateExport} to its boot's address alone`
        : 'no: each boot starts from the image') +
        from(m.persistent && m.sources.stateSize !== m.sources.persistent ? 'stateSize' : 'persistent'),
    ],
    ['machine id', m.machineId],
    [
      'stage',
      m.stageAt === null
        ? `${describeStage(m)} (it has not asked for its script yet)`
        : `${describeStage(m)} for ${formatDuration(m.stageAt, null)} (since ${formatTime(m.stageAt)})`,
    ],
    ...(m.stageDetail === null ? [] : [['detail', m.stageDetail] as const]),
    ['attached', m.attached ? 'yes: a live NBD connection of its boot holds its root or its state' : 'no'],
    ['address', m.address ?? '-'],
    ['bmc', m.bmc === null ? '(none)' : describeBmc(m.bmc)],
    ...(m.bmc === null ? [] : [['power', describePower(m.power)] as const]),
    ['last seen', m.lastSeenAt === null ? 'never' : formatTime(m.lastSeenAt)],
    ['created', formatTime(m.createdAt)],
  ]);
  // Every boot starts with its script: none fetched, no boot to show.
  const start = m.timeline.script;
  if (start === undefined) return fields;
  const stages = Object.entries(m.timeline).sort(([, a], [, b]) => a.localeCompare(b));
  const timelineColumns: Column<[string, string]>[] = [
    { header: 'STAGE', value: ([stage]) => stage },
    { header: 'AT', value: ([, at]) => formatTime(at) },
    { header: 'AFTER', value: ([, at]) => formatDuration(start, at), alignRight: true },
  ];
  return `${fields}\n${renderTable(timelineColumns, stages)}`;
}

function describePower(power: NbdmuxMachine['power']): string {
  if (power === null) return 'not polled yet';
  return `${power.state ?? 'unknown'} (at ${formatTime(power.at)})${power.error === null ? '' : `: ${power.error}`}`;
}

const discoveredColumns: Column<NbdmuxDiscoveredMachine>[] = [
  { header: 'MAC', value: (d) => d.mac },
  { header: 'ADDRESS', value: (d) => d.address },
  { header: 'FIRST', value: (d) => formatTime(d.firstSeenAt) },
  { header: 'LAST', value: (d) => formatTime(d.lastSeenAt) },
  { header: 'REQUESTS', value: (d) => String(d.requests), alignRight: true },
];

export function renderDiscovered(discovered: readonly NbdmuxDiscoveredMachine[]): string {
  if (discovered.length === 0) return 'no unknown MAC has asked to boot\n';
  return renderTable(discoveredColumns, discovered);
}

/** A machine's BMC in one line: user@address:port, the password as set or not, and what it takes from its profile. */
export function describeBmc(bmc: NonNullable<NbdmuxMachine['bmc']>): string {
  const shared = (['user', 'password'] as const).filter((field) => bmc.sources[field] === 'profile');
  const from = shared.length === 0 ? '' : ` (${shared.join(' and ')} from its profile)`;
  return `${bmc.user ?? '(no user)'}@${bmc.address}:${bmc.port}, password ${bmc.password}${from}`;
}
