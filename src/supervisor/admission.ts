import { admits } from '../rules/allow-list.js';
import type { ConfigVariants } from './config-variants.js';
import type { ConnectionStore } from './connection-store.js';
import type { ConnectionTable } from './connections.js';
import type { LiveConnection } from './live-connection.js';
import type { Report } from './report-pipe.js';

/** What admission reads: the stored exports, the machines' states as served now, the live connections. */
export interface AdmissionSources {
  store: Pick<ConnectionStore, 'exportById'>;
  configs: Pick<ConfigVariants, 'stateOf'>;
  connections: Pick<ConnectionTable, 'list'>;
}

export interface Refusal {
  exportName: string | null;
  reason: string;
}

/**
 * Why a client may not be served what it chose, or null when it may; asked when its process
 * reports the choice. An export is judged on its stored allow list, so the rule holds for
 * exports removed since the process started too. A machine's state is served only to the address
 * its current boot came from, and never to two connections at once.
 */
export function refusalOf(conn: LiveConnection, report: Report, { store, configs, connections }: AdmissionSources): Refusal | null {
  const client = conn.clientAddress;
  if ('exportId' in report) {
    const row = store.exportById(report.exportId);
    if (!row) return { exportName: null, reason: `${client} chose export id ${report.exportId}, which nbdmux never wrote` };
    if (admits(row, client)) return null;
    return { exportName: row.name, reason: `${client} is not in the allow list of export ${row.name}` };
  }
  const state = configs.stateOf(report.machineId);
  // The export's allow list as stored now: narrowed since the boot began, it refuses the state too.
  const exp = state === undefined ? undefined : store.exportById(state.exportId);
  if (state === undefined || state.client !== client || exp === undefined || !admits(exp, client)) {
    return {
      exportName: null,
      reason: `${client} may no longer attach the state of machine ${state?.machine ?? report.machineId}: it was reset or deleted, its boot now comes from another address, or its export's allow list leaves this address out`,
    };
  }
  const holder = connections.list().find((other) => other.machineId === report.machineId && other.id !== conn.id);
  if (holder === undefined) return null;
  return {
    exportName: null,
    reason: `the state of machine ${state.machine} is already attached (connection ${holder.id} from ${holder.clientAddress}): a second boot of the same machine must wait until the first one's connection closes`,
  };
}
