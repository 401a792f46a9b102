import type { NbdmuxProfile } from '../client.js';
import { formatBytes } from '../units.js';
import { formatTime } from './format.js';
import { renderFields, renderTable, type Column } from './table.js';

const profileColumns: Column<NbdmuxProfile>[] = [
  { header: 'NAME', value: (p) => p.name },
  { header: 'EXPORT', value: (p) => p.export ?? (p.exportProblem === null ? '-' : '- (removed)') },
  { header: 'STATE', value: (p) => (p.persistent ? formatBytes(p.stateSize ?? p.defaults.stateSize) : '-'), alignRight: true },
  { header: 'MACHINES', value: (p) => String(p.machines.length), alignRight: true },
];

export function renderProfiles(profiles: readonly NbdmuxProfile[]): string {
  if (profiles.length === 0) return 'no profiles; add one with: nbdmux profiles add NAME --export EXPORT\n';
  return renderTable(profileColumns, profiles);
}

/** Its fields, as its machines without their own get them, then its machines. */
export function renderProfile(p: NbdmuxProfile): string {
  // A field it leaves unset: its machines get the default, unless they set it.
  const unset = (defaultText: string) => `unset (default: ${defaultText})`;
  const args = (cmdline: string) => (cmdline === '' ? '(none)' : cmdline);
  const yesNo = (value: boolean) => (value ? 'yes' : 'no');
  return renderFields([
    ['name', p.name],
    ['export', p.export ?? p.exportProblem ?? unset('none, its machines boot nothing')],
    ['kernel args', p.cmdline === null ? unset(p.defaults.cmdline === '' ? 'none' : p.defaults.cmdline) : args(p.cmdline)],
    ['persistent', p.persistent === null ? unset(yesNo(p.defaults.persistent)) : yesNo(p.persistent)],
    ['state size', p.stateSize === null ? unset(formatBytes(p.defaults.stateSize)) : `${formatBytes(p.stateSize)} (${p.stateSize} bytes)`],
    ['bmc', p.bmc === null ? '(none: each machine gives its own user and password)' : `user ${p.bmc.user}, password ${p.bmc.password}`],
    ['machines', p.machines.length === 0 ? 'none' : p.machines.map((m) => `${m.name} (${m.mac})`).join('\n')],
    ['created', formatTime(p.createdAt)],
  ]);
}
