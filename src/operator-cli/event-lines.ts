import type { NbdmuxStreamEvent } from '../client.js';
import { formatBytes, formatDuration } from '../units.js';
import { formatClock, formatDetails } from './format.js';

/** The event column fits the longest type (test/event-map.test.ts checks every one); a stream cannot measure rows it has not seen yet. */
export const typeWidth = 'export.version-switched'.length;
/** Most export names fit; a longer one pushes its line's text along rather than being cut. */
const exportWidth = 14;
/** Where an event's text starts: a line wrapped on a narrow terminal goes on under it. */
export const eventTextColumn = 8 + 2 + typeWidth + 2 + exportWidth + 2;
/** Connections whose opening was seen, for the time each closed one lasted; bounded by what a boot storm can hold open. */
const rememberedOpenings = 4096;

/**
 * `watch`'s events as people read them: time, type and export in columns, then what happened in
 * words, sizes and durations in units, an exit code or error whole at the end. A connection reads
 * as the line it attached and the line it closed (its `opened` alone says nothing the next does
 * not); --json keeps every event as it is.
 */
export class EventLines {
  private readonly openedAt = new Map<number, string>();

  /** The event's line, or null for one that the next line says better. */
  render(event: NbdmuxStreamEvent): string | null {
    if (event.type === 'connection.opened') {
      this.openedAt.set(event.details.connection, event.at);
      if (this.openedAt.size > rememberedOpenings) this.openedAt.delete(this.openedAt.keys().next().value!);
      return null;
    }
    return columns(event.at, event.type, event.exportName, this.describe(event));
  }

  private describe(event: Exclude<NbdmuxStreamEvent, { type: 'connection.opened' }>): string {
    switch (event.type) {
      case 'replay.skipped':
        return event.details.reason === 'pruned'
          ? `${event.details.skipped} events missed are gone: older than --retain-days, they were pruned`
          : `${event.details.skipped} events missed, too many to replay: events.list (or the dashboard) has them`;
      case 'connection.negotiated': {
        const { connection, client, machineState } = event.details;
        return `#${connection} ${client} attached${machineState === undefined ? '' : ` the state of machine ${machineState}`}`;
      }
      case 'connection.closed': {
        const { connection, client, outcome, bytesSent, exitCode, signal, error } = event.details;
        const opened = this.openedAt.get(connection);
        this.openedAt.delete(connection);
        return (
          `#${connection} ${client} ${outcome}${opened === undefined ? '' : ` after ${formatDuration(opened, event.at)}`}, sent ${formatBytes(bytesSent)}` +
          (exitCode === undefined || exitCode === 0 ? '' : `, exit code ${exitCode}`) +
          (signal === undefined ? '' : `, signal ${signal}`) +
          (error === undefined ? '' : `: ${error}`)
        );
      }
      case 'connection.refused': {
        const { client, port, reason } = event.details;
        return `${client}${port === undefined ? '' : ` port ${port}`} refused: ${reason}${repeats(event.details)}`;
      }
      case 'connection.adopted':
        return `#${event.details.connection} adopted from the previous daemon (nbd-server pid ${event.details.pid ?? 'unknown'})`;
      case 'export.created': {
        const { file, size, readonly, cow, allow } = event.details;
        const mode = cow ? 'copy-on-write' : readonly ? 'read-only' : 'read-write';
        return `${file}, ${formatBytes(size)}, ${mode}${allow.length === 0 ? '' : `, allow ${allow.join(' ')}`}${by(event.details)}`;
      }
      case 'export.version-switched': {
        const { version, reason, file } = event.details;
        return `version ${version} serves new clients (${reason}): ${file}${by(event.details)}`;
      }
      case 'export.removed': {
        const { force, liveConnections } = event.details;
        const live = liveConnections === 0 ? 'no live connection' : `${liveConnections} live connection(s) ${force ? 'cut' : 'draining'}`;
        return `removed${force ? ' with --force' : ''}, ${live}${by(event.details)}`;
      }
      case 'export.file-changed': {
        const { file, pathLeadsTo, serving } = event.details;
        return `${file} now leads to ${pathLeadsTo}; serving ${serving}`;
      }
      case 'import.started':
        return `version ${event.details.version} from ${event.details.url}${by(event.details)}`;
      case 'import.done':
        return `version ${event.details.version}: ${formatBytes(event.details.size)}, sha256 ${event.details.sha256}`;
      case 'import.failed':
        return `version ${event.details.version} failed (${event.details.reason}): ${event.details.error}`;
      case 'import.cancelled':
        return `version ${event.details.version} cancelled`;
      case 'nbd-server.failed': {
        const { connection, client, reason } = event.details;
        const whose = [connection === undefined ? '' : `#${connection}`, client ?? ''].filter(Boolean).join(' ');
        return `${whose ? `${whose}: ` : ''}${reason}${repeats(event.details)}`;
      }
      case 'nbd-server.recovered': {
        const { failedStarts, failingSince, lastReason } = event.details;
        return `serves again after ${failedStarts} failed start(s) in ${formatDuration(failingSince, event.at)}; the last: ${lastReason}`;
      }
      case 'boot.script': {
        const { client, status, menu, nbd } = event.details;
        return `${client} HTTP ${status}${nbd === undefined ? '' : `, NBD at ${nbd}`}${menu === undefined ? '' : `, menu ${menu}`}${repeats(event.details)}`;
      }
      case 'boot.kernel':
      case 'boot.initrd': {
        const { client, status, bytes } = event.details;
        return `${client} HTTP ${status}, ${formatBytes(bytes)}${repeats(event.details)}`;
      }
      case 'machine.stage': {
        // A report's lines (the timing of `root`) would break the one-line-per-event shape: its last line says enough.
        const { name, mac, stage, client, detail } = event.details;
        return `${name} (${mac}) ${stage} from ${client}${detail === undefined ? '' : `: ${detail.split('\n').pop()!}`}`;
      }
      case 'machine.power': {
        const { name, mac, action, outcome, state, error } = event.details;
        const result = outcome === 'done' ? (state ?? 'done') : `${outcome}${error === undefined ? '' : `: ${error}`}`;
        return `${name} (${mac}) ${action}: ${result}${by(event.details)}`;
      }
      case 'daemon.started':
      case 'daemon.stopped':
      case 'daemon.space-recovered':
      case 'auth.login-succeeded':
      case 'auth.login-failed':
      case 'auth.logout':
      case 'machine.created':
      case 'machine.updated':
      case 'machine.deleted':
      case 'machine.reset':
      case 'machine.discovered':
      case 'profile.created':
      case 'profile.removed':
      case 'machine.bmc-set':
      case 'machine.bmc-removed':
      case 'profile.bmc-set':
      case 'profile.bmc-removed':
        return formatDetails(event.details);
      case 'profile.updated': {
        const { name, changed, machines, cleared, stateDiscarded } = event.details;
        const what = changed.length > 0 ? changed.join(', ') : 'nothing';
        const clearedText = cleared === undefined || cleared.length === 0 ? '' : `; its machines' own ${cleared.join(', ')} cleared`;
        const discarded = stateDiscarded.length === 0 ? '' : `; state discarded: ${stateDiscarded.join(' ')}`;
        return `${name}: ${what} changed for ${machines} machine(s) at their next boot${clearedText}${discarded}${by(event.details)}`;
      }
      case 'profile.adopted': {
        const { name, machines } = event.details;
        return `${name} adopted ${machines.map((m) => `${m.name} (${m.mac})`).join(', ')}${by(event.details)}`;
      }
      default:
        return unknownEvent(event);
    }
  }
}

/** A line in the stream's columns: time, kind, export, then the text. */
export function columns(at: string, kind: string, exportName: string | null, text: string): string {
  return [formatClock(at), kind.padEnd(typeWidth), (exportName ?? '-').padEnd(exportWidth), text].join('  ');
}

/** Who made the change, when the event names them. */
function by(details: { actor?: string; client?: string }): string {
  return details.actor === undefined ? '' : ` (by ${details.actor}${details.client === undefined ? '' : ` from ${details.client}`})`;
}

/** A summary of repeats: how many more since when. */
function repeats({ count, since }: { count?: number; since?: string }): string {
  return count !== undefined && since !== undefined ? ` (${count} more since ${formatClock(since)})` : '';
}

/** A compile error when an event type has no case above; a newer daemon's event still prints, as its details. */
function unknownEvent(event: never): string {
  return formatDetails((event as NbdmuxStreamEvent).details);
}
