import type { NbdmuxConnection, NbdmuxExport, NbdmuxHealth, NbdmuxMachine } from '../../src/client.js';
import { clientEndpoint, describeImport, describeMode, importFraction } from '../../src/presentation.js';
import { formatBytes, formatDuration, formatRate } from '../../src/units.js';
import { keepUnits } from './chart.js';
import { el, formatTime } from './format.js';
import { exportLink, machineLink } from './routes.js';
import { DataTable, td } from './table.js';

export interface ExportActions {
  remove(exp: NbdmuxExport, force: boolean): void;
}

export function renderHealth(target: HTMLElement, health: NbdmuxHealth): void {
  target.className = `badge ${health.ok ? 'ok' : 'down'}`;
  target.textContent = health.ok ? `NBD serving on port ${health.nbdPort}` : 'NBD not serving';
  target.title = health.ok ? `nbd-server ${health.nbdServerVersion ?? '?'}` : health.problems.join('\n');
}

export function renderProblems(target: HTMLElement, health: NbdmuxHealth): void {
  target.hidden = health.ok;
  target.replaceChildren(...health.problems.map((problem) => el('p', { text: problem })));
}

/** Remove (Cancel while importing) and Cut, as the export's state allows: the same buttons on its row and its page. */
export function exportButtons(exp: NbdmuxExport, servingNames: ReadonlySet<string>, actions: ExportActions): HTMLButtonElement[] {
  const buttons: HTMLButtonElement[] = [];
  if (exp.state !== 'draining') {
    // Removing an export that is importing cancels the import.
    const remove = el('button', { text: exp.state === 'importing' ? 'Cancel' : 'Remove', className: 'small', attrs: { type: 'button' } });
    remove.addEventListener('click', () => actions.remove(exp, false));
    buttons.push(remove);
  }
  // Cutting by name would also remove a newer export serving under the same name.
  if (exp.connections > 0 && (exp.state === 'serving' || !servingNames.has(exp.name))) {
    const cut = el('button', {
      text: 'Cut',
      className: 'small danger',
      title: `Remove now, cutting ${exp.connections} live connection(s)`,
      attrs: { type: 'button' },
    });
    cut.addEventListener('click', () => actions.remove(exp, true));
    buttons.push(cut);
  }
  return buttons;
}

/** The file an export serves, its version, an import's progress and a changed path: the cell of its row and a fact of its page. */
export function fileDetails(exp: NbdmuxExport): HTMLElement[] {
  return [
    el('span', { text: exp.file ?? '—', className: 'code' }),
    ...(exp.version !== null ? [el('small', { text: `version ${exp.version}`, className: 'version' })] : []),
    ...(exp.import ? [importProgress(exp.import)] : []),
    ...(exp.fileChange
      ? [
          el('small', {
            text: `path now leads to ${exp.fileChange.pathLeadsTo}; serving ${exp.fileChange.serving}`,
            className: 'file-changed',
          }),
        ]
      : []),
  ];
}

/** A bar (indeterminate while the total is unknown) with the stage, amounts, rate and time left; or the failure. */
function importProgress(progress: NonNullable<NbdmuxExport['import']>): HTMLElement {
  const fraction = importFraction(progress);
  const bar = el('progress', {
    attrs: { max: '1', 'aria-label': `import of version ${progress.version}`, ...(fraction !== null && { value: String(fraction) }) },
  });
  const text = el('small', {}, keepUnits(describeImport(progress)));
  return el(
    'div',
    { className: `import${progress.error !== null ? ' failed' : ''}`, attrs: { 'data-import-version': String(progress.version) } },
    progress.error !== null ? [text] : [bar, text],
  );
}

export function stateBadge(state: string, text = state): HTMLElement {
  return el('span', { text, className: `state ${state}` });
}

/** The exports of the overview: one line each; the attach lines, boot details and versions are on the export's page. */
export function exportsTable(servingNames: () => ReadonlySet<string>, actions: ExportActions): DataTable<NbdmuxExport> {
  return new DataTable<NbdmuxExport>({
    id: 'exports',
    noun: 'exports',
    empty: 'No exports yet: add one below.',
    searchText: (e) => [e.name, e.file, e.state, describeMode(e), e.boot.os].join(' '),
    columns: [
      { label: 'Name', sortBy: (e) => e.name, cell: (e) => el('td', { className: 'name' }, [exportLink(e.name)]) },
      { label: 'File', sortBy: (e) => e.file ?? '', cell: (e) => el('td', { className: 'file' }, fileDetails(e)) },
      { label: 'Size', sortBy: (e) => e.size ?? -1, cell: (e) => td(e.size === null ? '—' : formatBytes(e.size), 'num') },
      {
        label: 'Mode',
        low: true,
        sortBy: describeMode,
        cell: (e) =>
          el('td', {}, [
            el('span', { text: describeMode(e) }),
            ...(e.allow.length > 0 ? [el('small', { text: `only ${e.allow.join(', ')}`, className: 'allow' })] : []),
          ]),
      },
      { label: 'State', sortBy: (e) => e.state, cell: (e) => el('td', {}, [stateBadge(e.state)]) },
      { label: 'Live', sortBy: (e) => e.connections, cell: (e) => td(String(e.connections), 'num connections') },
      {
        label: 'Boot',
        sortBy: (e) => (e.boot.ready ? 0 : 1),
        // The reason in full is on the export's page; here the word, and the reason on hovering.
        cell: (e) =>
          el('td', { title: e.boot.reason ?? '' }, [
            stateBadge(e.boot.ready ? 'ready' : 'not-ready', e.boot.ready ? 'ready' : 'not ready'),
          ]),
      },
      { label: 'Created', low: true, sortBy: (e) => e.createdAt, cell: (e) => td(formatTime(e.createdAt), 'time', e.createdAt) },
      { label: 'Actions', cell: (e) => el('td', {}, [el('div', { className: 'actions' }, exportButtons(e, servingNames(), actions))]) },
    ],
    row: (e, cells) => el('tr', { className: e.state, attrs: { 'data-export': e.name, 'data-state': e.state } }, cells),
  });
}

/** The machine a connection belongs to: the one whose current boot came from its address. */
export function machineOf(conn: Pick<NbdmuxConnection, 'clientAddress'>, machines: readonly NbdmuxMachine[]): NbdmuxMachine | undefined {
  return machines.find((m) => m.address === conn.clientAddress);
}

/** Live connections: which export, which machine, how much and how fast. */
export function connectionsTable(id: string, machines: () => readonly NbdmuxMachine[]): DataTable<NbdmuxConnection> {
  const machineName = (c: NbdmuxConnection) => machineOf(c, machines())?.name ?? '';
  return new DataTable<NbdmuxConnection>({
    id,
    noun: 'connections',
    empty: 'No machine is attached.',
    searchText: (c) => [c.exportName, clientEndpoint(c), machineName(c)].join(' '),
    columns: [
      {
        label: 'Export',
        sortBy: (c) => c.exportName ?? '',
        cell: (c) => el('td', { className: 'name' }, [c.exportName === null ? '(negotiating)' : exportLink(c.exportName)]),
      },
      {
        label: 'Machine',
        sortBy: machineName,
        cell: (c) => {
          const m = machineOf(c, machines());
          return el('td', { className: 'machine' }, [m ? machineLink(m) : '—']);
        },
      },
      { label: 'Client', sortBy: (c) => clientEndpoint(c), cell: (c) => td(clientEndpoint(c), 'code client') },
      { label: 'Since', low: true, sortBy: (c) => c.openedAt, cell: (c) => td(formatDuration(c.openedAt, null), 'num', c.openedAt) },
      { label: 'Sent', sortBy: (c) => c.bytesSent, cell: (c) => td(formatBytes(c.bytesSent), 'num sent') },
      { label: 'Rate', sortBy: (c) => c.bytesPerSecond, cell: (c) => td(formatRate(c.bytesPerSecond), 'num rate') },
      {
        label: 'Diff',
        low: true,
        sortBy: (c) => c.cowDiffBytes ?? -1,
        cell: (c) => td(c.cowDiffBytes === null ? '—' : formatBytes(c.cowDiffBytes), 'num', 'copy-on-write diff size'),
      },
    ],
    row: (c, cells) => el('tr', { attrs: { 'data-connection': String(c.id) } }, cells),
  });
}
