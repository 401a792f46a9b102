import type { NbdmuxConnection, NbdmuxEvent, NbdmuxExport, NbdmuxHealth } from '../../src/client.js';
import { clientEndpoint, describeBoot, describeImport, describeMode, importFraction } from '../../src/presentation.js';
import { formatBytes, formatDuration, formatRate } from '../../src/units.js';
import { el, formatTime } from './format.js';

export interface ExportActions {
  remove(exp: NbdmuxExport, force: boolean): void;
  showVersions(exp: NbdmuxExport): void;
  copy(text: string, button: HTMLButtonElement): void;
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

/** The command a lab machine runs to attach an export. */
export function attachCommand(exp: NbdmuxExport, nbdPort: number | null): string {
  return `nbd-client ${location.hostname} ${nbdPort ?? 10809} -N ${exp.name} /dev/nbd0`;
}

/** What the ramboot kit's kernel needs on its command line to boot this export (see README, "Boot a machine"). */
export function kernelCommandLine(exp: NbdmuxExport, nbdPort: number | null): string {
  return `nbdroot=${location.hostname}:${nbdPort ?? 10809}/${exp.name}`;
}

function copyable(text: string, what: string, actions: ExportActions): HTMLElement {
  const copy = el('button', { text: 'Copy', className: 'small', title: `Copy the ${what}` });
  copy.addEventListener('click', () => actions.copy(text, copy));
  return el('div', { className: 'attach' }, [el('code', { text, title: what }), copy]);
}

export function renderExports(target: HTMLElement, exports: NbdmuxExport[], nbdPort: number | null, actions: ExportActions): void {
  if (exports.length === 0) {
    target.replaceChildren(
      el('tr', {}, [el('td', { text: 'No exports yet: add one below.', className: 'empty', attrs: { colspan: '9' } })]),
    );
    return;
  }
  const servingNames = new Set(exports.filter((e) => e.state === 'serving').map((e) => e.name));
  target.replaceChildren(
    ...exports.map((exp) => {
      const buttons: HTMLButtonElement[] = [];
      if (exp.state !== 'draining') {
        const versions = el('button', {
          text: 'Versions',
          className: 'small',
          title: 'Its versions, their live connections, and rollback',
        });
        versions.addEventListener('click', () => actions.showVersions(exp));
        buttons.push(versions);
        // Removing an export that is importing cancels the import.
        const remove = el('button', { text: exp.state === 'importing' ? 'Cancel' : 'Remove', className: 'small' });
        remove.addEventListener('click', () => actions.remove(exp, false));
        buttons.push(remove);
      }
      // Cutting by name would also remove a newer export serving under the same name.
      if (exp.connections > 0 && (exp.state === 'serving' || !servingNames.has(exp.name))) {
        const cut = el('button', {
          text: 'Cut',
          className: 'small danger',
          title: `Remove now, cutting ${exp.connections} live connection(s)`,
        });
        cut.addEventListener('click', () => actions.remove(exp, true));
        buttons.push(cut);
      }
      return el('tr', { className: exp.state, attrs: { 'data-export': exp.name, 'data-state': exp.state } }, [
        el('td', { text: exp.name, className: 'name' }),
        el('td', { className: 'file' }, [
          el('span', { text: exp.file ?? '—' }),
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
        ]),
        el('td', { text: exp.size === null ? '—' : formatBytes(exp.size), className: 'num' }),
        el('td', {}, [
          el('span', { text: describeMode(exp) }),
          ...(exp.allow.length > 0 ? [el('small', { text: `only ${exp.allow.join(', ')}`, className: 'allow' })] : []),
        ]),
        el('td', {}, [el('span', { text: exp.state, className: `state ${exp.state}` })]),
        el('td', { text: String(exp.connections), className: 'num connections' }),
        el('td', { text: formatTime(exp.createdAt), title: exp.createdAt }),
        el('td', {}, [
          copyable(attachCommand(exp, nbdPort), 'nbd-client command', actions),
          copyable(kernelCommandLine(exp, nbdPort), 'kernel command line for the ramboot kit', actions),
          copyable(`chain ${location.origin}/boot/${exp.name}.ipxe`, 'iPXE command that boots this export from nbdmux', actions),
          el('small', { text: `boot: ${describeBoot(exp)}`, className: 'boot' }),
          el('small', { text: `kernel args: ${exp.cmdline === '' ? '(none)' : exp.cmdline}`, className: 'cmdline' }),
        ]),
        el('td', {}, [el('div', { className: 'actions' }, buttons)]),
      ]);
    }),
  );
}

/** A bar (indeterminate while the total is unknown) with the stage, amounts, rate and time left; or the failure. */
function importProgress(progress: NonNullable<NbdmuxExport['import']>): HTMLElement {
  const fraction = importFraction(progress);
  const bar = el('progress', { attrs: { max: '1', ...(fraction !== null && { value: String(fraction) }) } });
  const text = el('small', { text: describeImport(progress) });
  return el(
    'div',
    { className: `import${progress.error !== null ? ' failed' : ''}`, attrs: { 'data-import-version': String(progress.version) } },
    progress.error !== null ? [text] : [bar, text],
  );
}

export function renderConnections(target: HTMLElement, connections: NbdmuxConnection[]): void {
  if (connections.length === 0) {
    target.replaceChildren(el('tr', {}, [el('td', { text: 'No machine is attached.', className: 'empty', attrs: { colspan: '6' } })]));
    return;
  }
  target.replaceChildren(
    ...connections.map((conn) =>
      el('tr', { attrs: { 'data-connection': String(conn.id) } }, [
        el('td', { text: conn.exportName ?? '(negotiating)', className: 'name' }),
        el('td', { text: clientEndpoint(conn), className: 'mono' }),
        el('td', { text: formatDuration(conn.openedAt, null), title: conn.openedAt }),
        el('td', { text: formatBytes(conn.bytesSent), className: 'num' }),
        el('td', { text: formatRate(conn.bytesPerSecond), className: 'num' }),
        el('td', {
          text: conn.cowDiffBytes === null ? '—' : formatBytes(conn.cowDiffBytes),
          className: 'num',
          title: 'copy-on-write diff size',
        }),
      ]),
    ),
  );
}

const maxEventsShown = 200;

/** Adds events to the log, newest first, skipping any already shown. */
export function prependEvents(target: HTMLElement, events: NbdmuxEvent[]): void {
  for (const event of events) {
    if (target.querySelector(`[data-event="${event.id}"]`)) continue;
    const row = el('li', { attrs: { 'data-event': String(event.id), 'data-type': event.type } }, [
      el('time', { text: formatTime(event.at), title: event.at }),
      el('span', { text: event.type, className: `type ${event.type.split('.')[0]}` }),
      el('span', { text: describeEvent(event), className: 'what' }),
    ]);
    const newer = [...target.children].find((child) => Number((child as HTMLElement).dataset.event) < event.id);
    target.insertBefore(row, newer ?? null);
  }
  while (target.children.length > maxEventsShown) target.lastElementChild!.remove();
}

function describeEvent(event: NbdmuxEvent): string {
  const name = event.exportName ?? '';
  switch (event.type) {
    case 'export.created': {
      const d = event.details;
      return `${name} → ${d.file} (${formatBytes(d.size)}${d.readonly ? ', read-only' : ''})${byActor(d)}`;
    }
    case 'export.removed': {
      const d = event.details;
      return `${name}${d.force ? ', cutting live connections' : d.liveConnections > 0 ? `, ${d.liveConnections} draining` : ''}${byActor(d)}`;
    }
    case 'export.version-switched': {
      const d = event.details;
      return `${name} now serves version ${d.version} (${d.file}) to new clients${d.reason === 'rollback' ? ', rolled back' : ''}${byActor(d)}`;
    }
    case 'import.started':
      return `${name}: importing version ${event.details.version} from ${event.details.url}${byActor(event.details)}`;
    case 'import.done':
      return `${name}: version ${event.details.version} imported (${formatBytes(event.details.size)}, sha256 ${event.details.sha256.slice(0, 12)}…)`;
    case 'import.failed':
      return `${name}: the import of version ${event.details.version} failed: ${event.details.error}`;
    case 'import.cancelled':
      return `${name}: the import of version ${event.details.version} was cancelled`;
    case 'export.file-changed':
      return `${name}: ${event.details.file} now leads to ${event.details.pathLeadsTo}; serving ${event.details.serving}`;
    case 'connection.opened':
      return `${event.details.client}:${event.details.port}`;
    case 'connection.negotiated':
      return `${event.details.client} attached ${event.details.machineState === undefined ? name : 'its machine state'}`;
    case 'connection.closed': {
      const d = event.details;
      return `${d.client}${name ? ` left ${name}` : ''}: ${d.outcome}, ${formatBytes(d.bytesSent)}${d.error ? ` (${d.error})` : ''}`;
    }
    case 'connection.refused': {
      // Repeats within an interval come as one event with their count (see RefusalSummary).
      const d = event.details;
      return `${d.client}: ${d.reason}${d.count > 1 && d.since ? ` (${d.count} times since ${formatTime(d.since)})` : ''}`;
    }
    case 'daemon.space-recovered':
      return `the data dir has space again (full since ${formatTime(event.details.fullSince)}); ${event.details.notRecorded} event(s) were not recorded`;
    case 'connection.adopted':
      return `${name} (pid ${event.details.pid}) from an earlier run`;
    case 'nbd-server.failed': {
      // Repeats within an interval come as one event with their count (see StartFailures).
      const d = event.details;
      return `${d.reason}${d.count !== undefined && d.count > 1 && d.since ? ` (${d.count} times since ${formatTime(d.since)})` : ''}`;
    }
    case 'nbd-server.recovered': {
      const d = event.details;
      return `nbd-server serves again after ${d.failedStarts} failed start(s) since ${formatTime(d.failingSince)} (last: ${d.lastReason})`;
    }
    case 'boot.script': {
      const d = event.details;
      const what = name ? `the boot script of ${name}` : `the boot menu (${d.menu ? d.menu.replaceAll(',', ', ') : 'no export ready'})`;
      return `${d.client} fetched ${what}${d.status === 304 ? ', unchanged' : ''}${repeats(d)}`;
    }
    case 'boot.kernel':
    case 'boot.initrd': {
      const d = event.details;
      return `${d.client} fetched the ${event.type === 'boot.kernel' ? 'kernel' : 'initramfs'} of ${name}${d.status === 304 ? ', unchanged' : ` (${formatBytes(d.bytes)})`}${repeats(d)}`;
    }
    case 'machine.created':
      return `machine ${event.details.name} (${event.details.mac})${name ? ` boots ${name}` : ''}${event.details.persistent ? ', persistent' : ''}${byActor(event.details)}`;
    case 'machine.updated': {
      const d = event.details;
      return `machine ${d.name}: ${d.changed.length > 0 ? d.changed.join(', ') : 'nothing'} changed${d.stateDiscarded ? ', its state discarded' : ''}${byActor(d)}`;
    }
    case 'machine.deleted':
      return `machine ${event.details.name} (${event.details.mac}) deleted${byActor(event.details)}`;
    case 'machine.reset':
      return `machine ${event.details.name}: its state discarded${byActor(event.details)}`;
    case 'machine.discovered':
      return event.details.count === undefined
        ? `unknown MAC ${event.details.mac} asked to boot from ${event.details.client}`
        : `${event.details.count} more unknown MACs asked to boot from ${event.details.client} since ${formatTime(event.details.since ?? '')}`;
    case 'machine.stage': {
      const d = event.details;
      return `machine ${d.name}: ${d.stage}${d.detail ? ` (${d.detail.split('\n').pop()})` : ''}`;
    }
    case 'daemon.started':
    case 'daemon.stopped':
    case 'auth.login-succeeded':
    case 'auth.login-failed':
    case 'auth.logout':
      return name;
    default:
      return unknownEvent(event);
  }
}

/** Who made a change; events from before nbdmux named actors have none. */
/** A summary of repeats: how many more fetches alike came since the first. */
function repeats({ count, since }: { count?: number; since?: string }): string {
  return count === undefined ? '' : `, and ${count} more time${count === 1 ? '' : 's'} since ${formatTime(since ?? '')}`;
}

function byActor({ actor, client }: { actor?: string; client?: string }): string {
  return actor ? ` by ${actor} from ${client}` : '';
}

/** A compile error when an event type has no case above; shows a newer daemon's event by its export name. */
function unknownEvent(event: never): string {
  return (event as NbdmuxEvent).exportName ?? '';
}
