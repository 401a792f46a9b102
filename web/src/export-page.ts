import { attachLines } from '../../src/attach-lines.js';
import type { BootEndpoint } from '../../src/boot/ipxe.js';
import type { NbdmuxConnection, NbdmuxExport, NbdmuxVersion } from '../../src/client.js';
import { describeBoot, explainMode } from '../../src/presentation.js';
import { formatBytes } from '../../src/units.js';
import { throughputChart, type Throughput } from './chart.js';
import { el, formatTime } from './format.js';
import { DataTable, td } from './table.js';
import { exportButtons, fileDetails, stateBadge, type ExportActions } from './views.js';

export interface ExportPageActions extends ExportActions {
  rollback(name: string, version: number): void;
  copy(text: string, button: HTMLButtonElement): void;
}

export class ExportPage {
  private shown = '';
  private readonly versions: DataTable<NbdmuxVersion>;

  constructor(
    private readonly root: HTMLElement,
    private readonly connections: DataTable<NbdmuxConnection>,
    private readonly actions: ExportPageActions,
    private readonly endpoint: () => BootEndpoint | null,
  ) {
    this.versions = new DataTable<NbdmuxVersion>({
      id: 'versions',
      noun: 'versions',
      empty: 'It has no versions.',
      searchText: (v) => [v.version, v.state, v.url, v.file, v.error].join(' '),
      columns: [
        { label: 'Version', sortBy: (v) => v.version, cell: (v) => td(`${v.version}${v.current ? ' (current)' : ''}`, 'num') },
        { label: 'State', sortBy: (v) => v.state, cell: (v) => el('td', {}, [stateBadge(v.state)]) },
        { label: 'Size', sortBy: (v) => v.size ?? -1, cell: (v) => td(v.size === null ? '—' : formatBytes(v.size), 'num') },
        {
          label: 'Live',
          sortBy: (v) => v.connections,
          cell: (v) => td(String(v.connections), 'num connections', 'live connections still reading this version'),
        },
        { label: 'Created', low: true, sortBy: (v) => v.createdAt, cell: (v) => td(formatTime(v.createdAt), 'time', v.createdAt) },
        {
          label: 'Source',
          sortBy: (v) => v.url ?? v.file ?? '',
          cell: (v) =>
            el('td', { className: 'file' }, [
              el('span', { text: v.url ?? v.file ?? '—', className: 'code' }),
              ...(v.error ? [el('small', { text: v.error, className: 'file-changed' })] : []),
            ]),
        },
        { label: 'Actions', cell: (v) => el('td', {}, this.rollbackButton(v)) },
      ],
      row: (v, cells) => el('tr', { className: v.current ? 'current' : '', attrs: { 'data-version': String(v.version) } }, cells),
    });
    root.querySelector('#versions-table')!.append(this.versions.element);
    root.querySelector('#export-connections-table')!.append(connections.element);
  }

  private name = '';

  /** Draws the export from a snapshot; its facts and buttons only when they changed, so a click or an open disclosure survives. */
  render(
    exp: NbdmuxExport | undefined,
    name: string,
    all: readonly NbdmuxExport[],
    live: readonly NbdmuxConnection[],
    throughput: Throughput,
  ): void {
    this.name = name;
    const key = JSON.stringify([exp, name, this.endpoint()]);
    if (key !== this.shown) {
      this.shown = key;
      this.root.querySelector('#export-title')!.textContent = name;
      document.title = `${name} · nbdmux`;
      const servingNames = new Set(all.filter((e) => e.state === 'serving').map((e) => e.name));
      this.root
        .querySelector('#export-facts')!
        .replaceChildren(...(exp ? facts(exp) : [el('p', { text: `No export is named ${name}: it was removed.` })]));
      this.root.querySelector('#export-actions')!.replaceChildren(...(exp ? exportButtons(exp, servingNames, this.actions) : []));
      this.root.querySelector('#attach-lines')!.replaceChildren(...this.lines(name));
    }
    for (const section of this.root.querySelectorAll<HTMLElement>('[data-needs-export]')) section.hidden = exp === undefined;
    this.connections.render(live.filter((c) => c.exportName === name));
    this.root.querySelector('#export-chart')!.replaceChildren(throughputChart(throughput.samples(`export:${name}`)));
  }

  showVersions(versions: NbdmuxVersion[]): void {
    this.versions.render(versions);
  }

  private rollbackButton(v: NbdmuxVersion): HTMLButtonElement[] {
    if (v.current || v.state !== 'ready') return [];
    const button = el('button', {
      text: 'Roll back',
      className: 'small',
      title: `Serve version ${v.version} to new clients again`,
      attrs: { type: 'button' },
    });
    const name = this.name;
    button.addEventListener('click', () => this.actions.rollback(name, v.version));
    return [button];
  }

  private lines(name: string): HTMLElement[] {
    const at = this.endpoint();
    if (at === null) return [el('p', { text: 'Asking the daemon for its address…', className: 'muted' })];
    return attachLines(name, at).map((line) => {
      if ('note' in line) return el('p', { text: line.note, className: 'muted' });
      const copy = el('button', { text: 'Copy', className: 'small', title: `Copy the ${line.what}`, attrs: { type: 'button' } });
      copy.addEventListener('click', () => this.actions.copy(line.text, copy));
      return el('div', { className: 'attach' }, [el('code', { text: line.text, title: line.what }), copy]);
    });
  }
}

function facts(exp: NbdmuxExport): HTMLElement[] {
  const fact = (term: string, value: Array<Node | string>, className = '') => [el('dt', { text: term }), el('dd', { className }, value)];
  return [
    el('dl', { className: 'facts' }, [
      ...fact('State', [stateBadge(exp.state)]),
      ...fact('File', fileDetails(exp), 'file'),
      ...fact('Size', [exp.size === null ? '—' : formatBytes(exp.size)], 'num'),
      ...fact('Mode', [explainMode(exp)]),
      ...fact(
        'Allowed',
        [exp.allow.length === 0 ? 'any client the NBD port admits' : exp.allow.join(', ')],
        exp.allow.length === 0 ? '' : 'code allow',
      ),
      ...fact('Live', [String(exp.connections)], 'num connections'),
      ...fact('Boot', [describeBoot(exp)], 'boot'),
      ...fact('Kernel args', [exp.cmdline === '' ? '(none)' : exp.cmdline], 'code cmdline'),
      ...(exp.sha256 === null ? [] : fact('sha256', [exp.sha256], 'code')),
      ...fact('Created', [formatTime(exp.createdAt)]),
    ]),
  ];
}
