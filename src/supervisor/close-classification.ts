import type { Outcome } from './connections.js';

/**
 * Ways a client ends a session before choosing an export (listing, an unknown name, a port
 * scan). They say nothing about nbd-server's health; any other early exit does.
 */
const clientEndedEarly = /terminated by client|Negotiation failed|Connection dropped|Connection reset|Read failed|Write failed|Broken pipe/;

/** How a serving process ended, and what the daemon knew of its connection by then. */
export interface ProcessEnd {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The tail of what it wrote on stderr. */
  stderr: string;
  /** The daemon killed it (a forced removal). */
  killRequested: boolean;
  /** Its client had chosen an export and been admitted. */
  negotiated: boolean;
  /** The allow list of the export its client chose refused the client. */
  refused: boolean;
  /** The negotiation deadline ran out and the daemon killed it. */
  expired: boolean;
}

export interface ClosedAs {
  outcome: Outcome;
  /** Why, as the connection's record and event say. */
  error: string | null;
  /** Set when nbd-server itself failed, not the client: the reason the data plane's health shows. */
  nbdServerFailed?: string;
}

/** What an ended serving process means for its connection and for nbd-server's health. Pure. */
export function classifyClose(end: ProcessEnd, negotiationTimeoutMs: number): ClosedAs {
  const error = lastLine(end.stderr);
  if (end.killRequested) return { outcome: 'killed', error };
  if (end.negotiated) return { outcome: 'closed', error };
  if (end.refused) return { outcome: 'not-served', error: 'refused by the export allow list' };
  if (end.expired) return { outcome: 'not-served', error: noExportChosen(negotiationTimeoutMs) };
  if (end.exitCode === 0 || end.signal === 'SIGPIPE' || clientEndedEarly.test(end.stderr)) return { outcome: 'not-served', error };
  return { outcome: 'failed', error, nbdServerFailed: exitedBeforeServing(end.exitCode, end.signal, end.stderr) };
}

/** Why a client cut at the negotiation deadline was not served, queued or started. */
export function noExportChosen(negotiationTimeoutMs: number): string {
  return `chose no export within ${negotiationTimeoutMs / 1000} s (--nbd-negotiation-timeout)`;
}

/** Why an nbd-server ended before it served anyone, as the operator should read it. */
export function exitedBeforeServing(exitCode: number | null, signal: NodeJS.Signals | null, stderr: string): string {
  return `nbd-server exited before serving (${signal ?? `exit ${exitCode}`}): ${lastLine(stderr) ?? 'no message'}`;
}

/** nbd-server's last word on stderr, without the "Exiting." it ends every error with. */
function lastLine(text: string): string | null {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && line !== 'Exiting.');
  return lines.at(-1) ?? null;
}
