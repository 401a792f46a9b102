import { bootsOf, stagePath, timelineOf, type PastBoot, type TimelineStep } from '../../src/boot-timeline.js';
import type { NbdmuxConnection, NbdmuxEvent, NbdmuxMachine } from '../../src/client.js';
import { describeMachineExport, describeSource } from '../../src/presentation.js';
import { formatBytes, formatDuration } from '../../src/units.js';
import { throughputChart, type Throughput } from './chart.js';
import { el, formatTime } from './format.js';
import type { MachineActions } from './machine-forms.js';
import { isBooting, stageCell } from './machines.js';
import { exportLink } from './routes.js';
import { DataTable, td } from './table.js';

export class MachinePage {
  private shown = '';
  private readonly timeline = new DataTable<{ step: TimelineStep; next: TimelineStep | undefined; start: string; ongoing: boolean }>({
    id: 'timeline',
    noun: 'stages',
    empty: 'It has not asked for its script yet: no boot to show.',
    searchText: ({ step }) => step.stage,
    columns: [
      {
        label: 'Stage',
        sortBy: ({ step }) => step.at,
        cell: ({ step }) => el('td', {}, [el('span', { text: step.stage, className: `state ${step.stage}` })]),
      },
      { label: 'Reached', sortBy: ({ step }) => step.at, cell: ({ step }) => td(formatTime(step.at), 'time', step.at) },
      { label: 'After', sortBy: ({ step }) => step.at, cell: ({ step, start }) => td(formatDuration(start, step.at), 'num after') },
      {
        label: 'Took',
        cell: ({ step, next, ongoing }) =>
          next
            ? td(formatDuration(step.at, next.at), 'num took')
            : ongoing
              ? el('td', { className: 'num took' }, [
                  el('span', { text: `for ${formatDuration(step.at, null)}`, attrs: { 'data-since': step.at } }),
                ])
              : td('—', 'num took'),
      },
    ],
    row: ({ step }, cells) => el('tr', { attrs: { 'data-stage': step.stage, 'data-at': step.at } }, cells),
  });
  private readonly boots = new DataTable<PastBoot>({
    id: 'boots',
    noun: 'boots',
    empty: 'No boot of it is in the recent events.',
    searchText: (b) => b.steps.map((s) => s.stage).join(' ') + (b.detail ?? ''),
    columns: [
      { label: 'Started', sortBy: (b) => b.steps[0]!.at, cell: (b) => td(formatTime(b.steps[0]!.at), 'time', b.steps[0]!.at) },
      { label: 'Stages', cell: (b) => td(stagePath(b.steps)) },
      {
        label: 'Ended at',
        sortBy: (b) => b.steps.at(-1)!.stage,
        cell: (b) =>
          el('td', {}, [
            el('span', { text: b.steps.at(-1)!.stage, className: `state ${b.steps.at(-1)!.stage}` }),
            ...(b.detail === null ? [] : [el('small', { text: b.detail, className: 'stage-detail' })]),
          ]),
      },
      {
        label: 'Lasted',
        sortBy: (b) => Date.parse(b.steps.at(-1)!.at) - Date.parse(b.steps[0]!.at),
        cell: (b) => td(formatDuration(b.steps[0]!.at, b.steps.at(-1)!.at), 'num'),
      },
    ],
    row: (b, cells) => el('tr', { attrs: { 'data-boot': b.steps[0]!.at } }, cells),
  });

  private readonly ended = new DataTable<NbdmuxConnection>({
    id: 'machine-ended',
    noun: 'ended connections',
    empty: 'None of the newest connections came from its address.',
    searchText: (c) => [c.exportName, c.outcome, c.error].join(' '),
    columns: [
      {
        label: 'Export',
        sortBy: (c) => c.exportName ?? '',
        cell: (c) => el('td', { className: 'name' }, [c.exportName === null ? '(none chosen)' : exportLink(c.exportName)]),
      },
      { label: 'Opened', sortBy: (c) => c.openedAt, cell: (c) => td(formatTime(c.openedAt), 'time', c.openedAt) },
      {
        label: 'Lasted',
        sortBy: (c) => Date.parse(c.closedAt ?? c.openedAt) - Date.parse(c.openedAt),
        cell: (c) => td(formatDuration(c.openedAt, c.closedAt), 'num'),
      },
      { label: 'Sent', sortBy: (c) => c.bytesSent, cell: (c) => td(formatBytes(c.bytesSent), 'num sent') },
      {
        label: 'Outcome',
        sortBy: (c) => c.outcome ?? '',
        cell: (c) =>
          el('td', { className: 'outcome' }, [
            el('span', { text: c.outcome ?? '—' }),
            ...(c.error === null ? [] : [el('small', { text: c.error, className: 'stage-detail' })]),
          ]),
      },
    ],
    row: (c, cells) => el('tr', { attrs: { 'data-connection': String(c.id) } }, cells),
  });

  constructor(
    private readonly root: HTMLElement,
    private readonly connections: DataTable<NbdmuxConnection>,
    private readonly actions: MachineActions,
  ) {
    root.querySelector('#timeline-table')!.append(this.timeline.element);
    root.querySelector('#boots-table')!.append(this.boots.element);
    root.querySelector('#machine-connections-table')!.append(connections.element);
    root.querySelector('#machine-ended-table')!.append(this.ended.element);
  }

  /** Draws the machine from a snapshot; the facts and buttons only when they changed, so a click or a focus is not lost. */
  render(m: NbdmuxMachine | undefined, mac: string, connections: readonly NbdmuxConnection[], throughput: Throughput): void {
    const title = this.root.querySelector<HTMLElement>('#machine-title')!;
    const key = JSON.stringify(m ?? mac);
    if (key !== this.shown) {
      this.shown = key;
      title.textContent = m ? m.name : mac;
      document.title = `${m ? m.name : mac} · nbdmux`;
      this.root
        .querySelector('#machine-facts')!
        .replaceChildren(...(m ? facts(m) : [el('p', { text: `No machine has MAC ${mac}: it was removed, or never added.` })]));
      this.root.querySelector('#machine-actions')!.replaceChildren(...(m ? this.buttons(m) : []));
      const steps = m ? timelineOf(m) : [];
      this.timeline.render(
        steps.map((step, i) => ({ step, next: steps[i + 1], start: steps[0]!.at, ongoing: m !== undefined && isBooting(m) })),
      );
    }
    for (const section of this.root.querySelectorAll<HTMLElement>('[data-needs-machine]')) section.hidden = m === undefined;
    const own = m?.address ? connections.filter((c) => c.clientAddress === m.address) : [];
    this.connections.render(own);
    this.root.querySelector('#machine-chart')!.replaceChildren(throughputChart(throughput.samples(`machine:${mac}`)));
  }

  /** Its past boots from the event log, and the ended connections from the address of its current boot. */
  showHistory(m: NbdmuxMachine | undefined, events: readonly NbdmuxEvent[], connections: readonly NbdmuxConnection[]): void {
    this.boots.render(m ? bootsOf(m.mac, events).slice(0, 20) : []);
    this.ended.render(m?.address ? connections.filter((c) => !c.live && c.clientAddress === m.address) : []);
  }

  private buttons(m: NbdmuxMachine): HTMLButtonElement[] {
    const button = (text: string, title: string, onClick: () => void, className = 'small') => {
      const node = el('button', { text, className, title, attrs: { type: 'button' } });
      node.addEventListener('click', onClick);
      return node;
    };
    return [
      button('Edit', 'Change its name, export, kernel args or state', () => this.actions.edit(m)),
      ...(m.persistent
        ? [button('Reset state', 'Discard what it wrote: its next boot starts from the image', () => this.actions.reset(m))]
        : []),
      button('Remove', m.persistent ? 'Forget it, deleting its state' : 'Forget it', () => this.actions.remove(m), 'small danger'),
    ];
  }
}

/** Where a value came from, once a profile gives some: a machine in none sets all it has. */
function from(m: NbdmuxMachine, field: keyof NbdmuxMachine['sources']): HTMLElement[] {
  return m.profile === null
    ? []
    : [el('small', { className: 'source', text: ` (${describeSource(m, field)})`, attrs: { 'data-source': m.sources[field] } })];
}

function facts(m: NbdmuxMachine): HTMLElement[] {
  const fact = (term: string, value: Array<Node | string>, className = '') => [el('dt', { text: term }), el('dd', { className }, value)];
  return [
    el('dl', { className: 'facts' }, [
      ...fact('Stage', stageCell(m), 'stage'),
      ...fact('MAC', [m.mac], 'code'),
      ...(m.profile === null ? [] : fact('Profile', [m.profile], 'profile')),
      ...fact(
        'Export',
        [m.export === null ? describeMachineExport(m) : exportLink(m.export), ...from(m, 'export')],
        m.exportProblem === null ? 'export' : 'export problem',
      ),
      ...fact('Address', [m.address ?? '—'], 'code address'),
      ...fact('Attached', [m.attached ? 'yes: a live connection of its boot holds its root or state' : 'no']),
      ...fact(
        'Persistent',
        [
          m.persistent ? `yes: ${formatBytes(m.stateSize)} of state` : 'no: each boot starts from the image',
          ...from(m, m.persistent && m.sources.stateSize !== m.sources.persistent ? 'stateSize' : 'persistent'),
        ],
        'persistent',
      ),
      ...fact('Kernel args', [m.cmdline === '' ? '(none)' : m.cmdline, ...from(m, 'cmdline')], 'code'),
      ...fact('Machine id', [m.machineId], 'code'),
      ...fact('Last seen', [m.lastSeenAt === null ? 'never' : formatTime(m.lastSeenAt)]),
      ...fact('Created', [formatTime(m.createdAt)]),
    ]),
  ];
}
