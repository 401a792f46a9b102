import type { NbdmuxProfile } from '../../src/client.js';
import { formatBytes } from '../../src/units.js';
import { el } from './format.js';
import { exportLink, machineLink } from './routes.js';
import { DataTable, td } from './table.js';

/** A field the profile leaves unset: its machines get the default, unless they set it. */
const unset = (defaultText: string) => td(`unset (${defaultText})`, 'muted');

/** The profiles: what each gives its machines that set nothing themselves, and its machines. */
export function profilesTable(edit: (p: NbdmuxProfile) => void): DataTable<NbdmuxProfile> {
  return new DataTable<NbdmuxProfile>({
    id: 'profiles',
    noun: 'profiles',
    empty: 'No profiles yet: add one below, then adopt the discovered machines into it.',
    searchText: (p) => [p.name, p.export, p.cmdline, ...p.machines.map((m) => m.name)].join(' '),
    columns: [
      { label: 'Name', sortBy: (p) => p.name, cell: (p) => td(p.name, 'name') },
      {
        label: 'Export',
        sortBy: (p) => p.export ?? '',
        cell: (p) =>
          p.export !== null
            ? el('td', { className: 'export' }, [exportLink(p.export)])
            : p.exportProblem !== null
              ? td(p.exportProblem, 'export problem')
              : unset('none'),
      },
      {
        label: 'Kernel args',
        low: true,
        cell: (p) => (p.cmdline === null ? unset('none') : td(p.cmdline === '' ? '(none)' : p.cmdline, 'code')),
      },
      {
        label: 'Persistent',
        low: true,
        cell: (p) =>
          p.persistent === null
            ? unset(p.defaults.persistent ? 'yes' : 'no')
            : td(p.persistent ? `yes: ${formatBytes(p.stateSize ?? p.defaults.stateSize)} of state` : 'no', 'persistent'),
      },
      {
        label: 'Machines',
        sortBy: (p) => p.machines.length,
        cell: (p) =>
          el(
            'td',
            { className: 'machines' },
            p.machines.length === 0 ? ['none'] : p.machines.flatMap((m, i) => (i === 0 ? [machineLink(m)] : [', ', machineLink(m)])),
          ),
      },
      {
        label: 'BMC',
        low: true,
        cell: (p) => (p.bmc === null ? td('none', 'muted') : td(`user ${p.bmc.user}, password ${p.bmc.password}`, 'bmc')),
      },
      {
        label: 'Actions',
        cell: (p) => {
          const button = el('button', { text: 'Edit', className: 'small', title: `Change profile ${p.name}`, attrs: { type: 'button' } });
          button.addEventListener('click', () => edit(p));
          return el('td', {}, [button]);
        },
      },
    ],
    row: (p, cells) => el('tr', { attrs: { 'data-profile': p.name } }, cells),
  });
}
