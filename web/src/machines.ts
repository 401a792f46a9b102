import type { NbdmuxDiscoveredMachine, NbdmuxMachine } from '../../src/client.js';
import { describeMachineExport, describeStage } from '../../src/presentation.js';
import { formatBytes, formatDuration } from '../../src/units.js';
import { el, formatTime } from './format.js';
import { exportLink, machineLink } from './routes.js';
import { DataTable, td } from './table.js';
import { machineStages } from '../../src/model/event-map.js';

/** `for 3m07s`: how long a machine has been at its stage; tickDurations keeps it counting between snapshots. */
function sinceText(iso: string): string {
  return `for ${formatDuration(iso, null)}`;
}

/** Counts up every `[data-since]` under `root`: a machine stuck at a stage shows how long, live. */
export function tickDurations(root: HTMLElement): void {
  for (const node of root.querySelectorAll<HTMLElement>('[data-since]')) node.textContent = sinceText(node.dataset.since!);
}

/** The stages of a boot under way: a machine at one of them is booting now. */
const bootingStages = new Set(['script', 'kernel', 'initrd', 'attached', 'root']);
/** The fleet's counts: the failed first, then in the order a boot passes its stages. */
const stageOrder = ['failed', ...machineStages.filter((stage) => stage !== 'failed'), 'never'];

export function isBooting(m: NbdmuxMachine): boolean {
  return m.stage !== null && bootingStages.has(m.stage);
}

/** Machines counted by stage, those booting now, and those whose boot failed with the reason in full. */
export function renderFleet(target: HTMLElement, machines: readonly NbdmuxMachine[]): void {
  const counts = new Map<string, number>();
  for (const m of machines) counts.set(m.stage ?? 'never', (counts.get(m.stage ?? 'never') ?? 0) + 1);
  const chips = stageOrder
    .filter((stage) => counts.has(stage))
    .map((stage) =>
      el('li', { className: `state ${stage}`, attrs: { 'data-stage-count': stage } }, [
        el('strong', { text: String(counts.get(stage)) }),
        ` ${stage === 'never' ? 'never booted' : stage}`,
      ]),
    );
  const booting = machines.filter(isBooting);
  const failed = machines.filter((m) => m.stage === 'failed');
  target.replaceChildren(
    el('ul', { className: 'stage-counts', attrs: { 'aria-label': 'machines by stage' } }, chips),
    el('div', { className: 'fleet-lists' }, [
      el('div', { attrs: { id: 'booting' } }, [
        el('h3', { text: `Booting now (${booting.length})` }),
        booting.length === 0
          ? el('p', { text: 'No machine is booting.', className: 'muted' })
          : el(
              'ul',
              { className: 'plain' },
              booting.map((m) =>
                el('li', { attrs: { 'data-machine': m.mac } }, [
                  machineLink(m),
                  ' ',
                  el('span', { text: m.stage!, className: `state ${m.stage}` }),
                  ' ',
                  since(m),
                ]),
              ),
            ),
      ]),
      el('div', { attrs: { id: 'failed' } }, [
        el('h3', { text: `Failed (${failed.length})` }),
        failed.length === 0
          ? el('p', { text: 'No boot failed.', className: 'muted' })
          : el(
              'ul',
              { className: 'plain' },
              failed.map((m) =>
                el('li', { attrs: { 'data-machine': m.mac } }, [
                  machineLink(m),
                  ' ',
                  since(m),
                  el('small', { text: m.stageDetail ?? 'no reason was reported', className: 'stage-detail' }),
                ]),
              ),
            ),
      ]),
    ]),
  );
}

function since(m: NbdmuxMachine): HTMLElement {
  return m.stageAt === null
    ? el('small', { text: '' })
    : el('small', { text: sinceText(m.stageAt), className: 'since', title: m.stageAt, attrs: { 'data-since': m.stageAt } });
}

/** The stage, how long it has been there, and a failure's reason in full (ramboot's own words). */
export function stageCell(m: NbdmuxMachine): HTMLElement[] {
  // `root` comes with ramboot's timing lines: there on hovering, since they are not news.
  const stage = el('span', {
    text: describeStage(m),
    className: `state ${m.stage ?? 'never'}`,
    title: m.stage === 'failed' ? '' : (m.stageDetail ?? ''),
  });
  const cell: HTMLElement[] = [stage];
  if (m.stageAt !== null) cell.push(since(m));
  if (m.stage === 'failed' && m.stageDetail !== null) cell.push(el('small', { text: m.stageDetail, className: 'stage-detail' }));
  return cell;
}

function exportCell(m: NbdmuxMachine): HTMLTableCellElement {
  const className = m.exportProblem === null ? 'export' : 'export problem';
  return m.export === null ? td(describeMachineExport(m), className) : el('td', { className }, [exportLink(m.export)]);
}

/** The machines of the overview; each one's actions and forms are on its own page. */
export function machinesTable(): DataTable<NbdmuxMachine> {
  return new DataTable<NbdmuxMachine>({
    id: 'machines',
    noun: 'machines',
    empty: 'No machines yet: add one below, or from Discovered.',
    searchText: (m) => [m.name, m.mac, m.export, describeStage(m), m.address, m.stageDetail].join(' '),
    columns: [
      { label: 'Name', sortBy: (m) => m.name, cell: (m) => el('td', { className: 'name' }, [machineLink(m)]) },
      { label: 'MAC', low: true, sortBy: (m) => m.mac, cell: (m) => td(m.mac, 'code mac') },
      { label: 'Export', sortBy: (m) => m.export ?? '', cell: exportCell },
      {
        label: 'Persistent',
        low: true,
        sortBy: (m) => (m.persistent ? m.stateSize : -1),
        cell: (m) => td(m.persistent ? `${formatBytes(m.stateSize)} of state` : 'no', 'persistent'),
      },
      {
        label: 'Stage',
        sortBy: (m) => stageOrder.indexOf(m.stage ?? 'never'),
        cell: (m) => el('td', { className: 'stage' }, stageCell(m)),
      },
      { label: 'Address', sortBy: (m) => m.address ?? '', cell: (m) => td(m.address ?? '—', 'code address') },
      {
        label: 'Last seen',
        low: true,
        sortBy: (m) => m.lastSeenAt ?? '',
        cell: (m) => td(m.lastSeenAt === null ? 'never' : formatTime(m.lastSeenAt), 'time', m.lastSeenAt ?? ''),
      },
    ],
    row: (m, cells) => el('tr', { attrs: { 'data-machine': m.mac, 'data-stage': m.stage ?? 'never' } }, cells),
  });
}

export function discoveredTable(add: (mac: string) => void): DataTable<NbdmuxDiscoveredMachine> {
  return new DataTable<NbdmuxDiscoveredMachine>({
    id: 'discovered',
    noun: 'discovered MACs',
    empty: 'No unknown machine has asked to boot.',
    searchText: (d) => `${d.mac} ${d.address}`,
    columns: [
      { label: 'MAC', sortBy: (d) => d.mac, cell: (d) => td(d.mac, 'code') },
      { label: 'Address', sortBy: (d) => d.address, cell: (d) => td(d.address, 'code') },
      { label: 'First seen', low: true, sortBy: (d) => d.firstSeenAt, cell: (d) => td(formatTime(d.firstSeenAt), 'time', d.firstSeenAt) },
      { label: 'Last seen', sortBy: (d) => d.lastSeenAt, cell: (d) => td(formatTime(d.lastSeenAt), 'time', d.lastSeenAt) },
      { label: 'Requests', sortBy: (d) => d.requests, cell: (d) => td(String(d.requests), 'num') },
      {
        label: 'Actions',
        cell: (d) => {
          const addButton = el('button', {
            text: 'Add',
            className: 'small',
            title: `Add ${d.mac} as a machine`,
            attrs: { type: 'button' },
          });
          addButton.addEventListener('click', () => add(d.mac));
          return el('td', {}, [addButton]);
        },
      },
    ],
    row: (d, cells) => el('tr', { attrs: { 'data-discovered': d.mac } }, cells),
  });
}
