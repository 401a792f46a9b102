import type { NbdmuxDiscoveredMachine, NbdmuxMachine } from '../../src/client.js';
import { describeMachineExport, describeStage } from '../../src/presentation.js';
import { formatBytes, formatDuration } from '../../src/units.js';
import { el, formatTime } from './format.js';

export interface MachineActions {
  edit(machine: NbdmuxMachine): void;
  remove(machine: NbdmuxMachine): void;
  reset(machine: NbdmuxMachine): void;
}

/** `for 3m07s`: how long a machine has been at its stage; tickDurations keeps it counting between snapshots. */
function sinceText(iso: string): string {
  return `for ${formatDuration(iso, null)}`;
}

/** Counts up every `[data-since]` under `root`: a machine stuck at a stage shows how long, live. */
export function tickDurations(root: HTMLElement): void {
  for (const node of root.querySelectorAll<HTMLElement>('[data-since]')) node.textContent = sinceText(node.dataset.since!);
}

export function renderMachines(target: HTMLElement, machines: NbdmuxMachine[], actions: MachineActions): void {
  if (machines.length === 0) {
    target.replaceChildren(
      el('tr', {}, [
        el('td', { text: 'No machines yet: add one below, or from Discovered.', className: 'empty', attrs: { colspan: '8' } }),
      ]),
    );
    return;
  }
  target.replaceChildren(
    ...machines.map((m) => {
      const buttons = [button('Edit', 'Change its name, export, kernel args or state', () => actions.edit(m))];
      if (m.persistent)
        buttons.push(button('Reset state', 'Discard what it wrote: its next boot starts from the image', () => actions.reset(m)));
      buttons.push(button('Remove', m.persistent ? 'Forget it, deleting its state' : 'Forget it', () => actions.remove(m)));
      return el('tr', { attrs: { 'data-machine': m.mac, 'data-stage': m.stage ?? 'never' } }, [
        el('td', { text: m.name, className: 'name' }),
        el('td', { text: m.mac, className: 'mono' }),
        el('td', { text: describeMachineExport(m), className: m.exportProblem === null ? 'export' : 'export problem' }),
        el('td', { text: m.persistent ? `${formatBytes(m.stateSize)} of state` : 'no', className: 'persistent' }),
        el('td', { className: 'stage' }, stageCell(m)),
        el('td', { text: m.address ?? '—', className: 'mono' }),
        el('td', { text: m.lastSeenAt === null ? 'never' : formatTime(m.lastSeenAt), title: m.lastSeenAt ?? '' }),
        el('td', {}, [el('div', { className: 'actions' }, buttons)]),
      ]);
    }),
  );
}

/** The stage, how long it has been there, and a failure's reason in full (ramboot's own words). */
function stageCell(m: NbdmuxMachine): HTMLElement[] {
  // `root` comes with ramboot's timing lines: there on hovering, since they are not news.
  const stage = el('span', {
    text: describeStage(m),
    className: `state ${m.stage ?? 'never'}`,
    title: m.stage === 'failed' ? '' : (m.stageDetail ?? ''),
  });
  const cell = [stage];
  if (m.stageAt !== null)
    cell.push(el('small', { text: sinceText(m.stageAt), className: 'since', title: m.stageAt, attrs: { 'data-since': m.stageAt } }));
  if (m.stage === 'failed' && m.stageDetail !== null) cell.push(el('small', { text: m.stageDetail, className: 'stage-detail' }));
  return cell;
}

export function renderDiscovered(target: HTMLElement, discovered: NbdmuxDiscoveredMachine[], add: (mac: string) => void): void {
  if (discovered.length === 0) {
    target.replaceChildren(
      el('tr', {}, [el('td', { text: 'No unknown machine has asked to boot.', className: 'empty', attrs: { colspan: '6' } })]),
    );
    return;
  }
  target.replaceChildren(
    ...discovered.map((d) =>
      el('tr', { attrs: { 'data-discovered': d.mac } }, [
        el('td', { text: d.mac, className: 'mono' }),
        el('td', { text: d.address, className: 'mono' }),
        el('td', { text: formatTime(d.firstSeenAt), title: d.firstSeenAt }),
        el('td', { text: formatTime(d.lastSeenAt), title: d.lastSeenAt }),
        el('td', { text: String(d.requests), className: 'num' }),
        el('td', {}, [button('Add', `Add ${d.mac} as a machine`, () => add(d.mac))]),
      ]),
    ),
  );
}

function button(text: string, title: string, onClick: () => void): HTMLButtonElement {
  const node = el('button', { text, className: 'small', title, attrs: { type: 'button' } });
  node.addEventListener('click', onClick);
  return node;
}
