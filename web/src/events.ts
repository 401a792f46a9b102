import type { NbdmuxEvent } from '../../src/client.js';
import { formatBytes } from '../../src/units.js';
import { el, formatTime } from './format.js';

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
    case 'machine.bmc-set': {
      const d = event.details;
      return `machine ${d.name}: BMC ${d.user === null ? '' : `${d.user}@`}${d.address}:${d.port}${d.passwordChanged ? ', new password' : ''}${byActor(d)}`;
    }
    case 'machine.bmc-removed':
      return `machine ${event.details.name}: BMC removed${byActor(event.details)}`;
    case 'profile.bmc-set': {
      const d = event.details;
      return `profile ${d.name}: BMC user ${d.user}${d.passwordChanged ? ', new password' : ''}${byActor(d)}`;
    }
    case 'profile.bmc-removed':
      return `profile ${event.details.name}: BMC credentials removed${byActor(event.details)}`;
    case 'machine.power': {
      const d = event.details;
      const result = d.outcome === 'done' ? (d.state ?? 'done') : `${d.outcome} (${d.error ?? ''})`;
      return `machine ${d.name}: power ${d.action}, ${result}${byActor(d)}`;
    }
    case 'machine.discovered':
      return event.details.count === undefined
        ? `unknown MAC ${event.details.mac} asked to boot from ${event.details.client}`
        : `${event.details.count} more unknown MACs asked to boot from ${event.details.client} since ${formatTime(event.details.since ?? '')}`;
    case 'profile.created':
      return `profile ${event.details.name} created${byActor(event.details)}`;
    case 'profile.updated': {
      const d = event.details;
      const cleared = d.cleared && d.cleared.length > 0 ? `, its machines' own ${d.cleared.join(', ')} cleared` : '';
      return `profile ${d.name}: ${d.changed.length > 0 ? d.changed.join(', ') : 'nothing'} changed for ${d.machines} machine(s)${cleared}${d.stateDiscarded.length > 0 ? `, state discarded: ${d.stateDiscarded.join(' ')}` : ''}${byActor(d)}`;
    }
    case 'profile.removed':
      return `profile ${event.details.name} removed${byActor(event.details)}`;
    case 'profile.adopted':
      return `profile ${event.details.name} adopted ${event.details.machines.map((m) => m.name).join(', ')}${byActor(event.details)}`;
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
