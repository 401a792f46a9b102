import { isNbdmuxError, type NbdmuxError } from '../client.js';
import { UsageError } from './usage-error.js';
import { cliRemedy } from './remedy.js';

export const exitCodes = { ok: 0, failed: 1, usage: 2 } as const;

export interface Failure {
  /** One line that says what went wrong and what to do. */
  message: string;
  exitCode: number;
}

/** Where the failure happened, for messages that name the daemon and whether a password was given. */
export interface FailureContext {
  url: string;
  passwordSet: boolean;
}

export function describeFailure(error: unknown, context: FailureContext): Failure {
  if (error instanceof UsageError) return { message: `${error.message}; run "nbdmux --help"`, exitCode: exitCodes.usage };
  if (isNbdmuxError(error)) return { message: oneLine(clientErrorMessage(error, context)), exitCode: exitCodes.failed };
  return { message: oneLine(error instanceof Error ? error.message : String(error)), exitCode: exitCodes.failed };
}

function clientErrorMessage(error: NbdmuxError, { url, passwordSet }: FailureContext): string {
  const status = (error.meta?.response as { status?: number } | undefined)?.status ?? error.data?.httpStatus;
  const code = error.data?.code;
  if (code === 'UNAUTHORIZED' || status === 401) {
    return passwordSet
      ? `the daemon at ${url} refused the admin password in NBDMUX_ADMIN_PASSWORD: check it`
      : `the daemon at ${url} requires the admin password: set NBDMUX_ADMIN_PASSWORD`;
  }
  // The daemon says what to do in REST terms, and, as data, what to do: said here as commands.
  const remedy = error.data?.remedy;
  if (remedy && error.data?.problem !== undefined) return `${error.data.problem}; ${cliRemedy(remedy)}`;
  if (code !== undefined) return error.message;

  // No tRPC answer at all: the daemon was not reached, or something else answered.
  const unreachable = networkErrorCode(error);
  if (unreachable) return `cannot reach the nbdmux daemon at ${url} (${unreachable}): start it, or point --url or NBDMUX_URL at it`;
  const answered = jsonErrorMessage(error.meta?.responseJSON);
  if (status !== undefined) {
    return `the daemon at ${url} answered HTTP ${status}${answered ? `: ${answered}` : ''}; check that --url or NBDMUX_URL points at nbdmux`;
  }
  return `request to ${url} failed: ${causeChain(error)}; check that --url or NBDMUX_URL points at nbdmux`;
}

/** `fetch failed (bad port)`: the outer message alone rarely says enough. */
function causeChain(error: Error): string {
  const messages: string[] = [];
  for (let cause: unknown = error; cause instanceof Error && messages.length < 4; cause = cause.cause) {
    if (!messages.includes(cause.message)) messages.push(cause.message);
  }
  return messages[0] + (messages.length > 1 ? ` (${messages.slice(1).join(': ')})` : '');
}

/** fetch wraps the socket error (ECONNREFUSED, ENOTFOUND, ...) one or two causes deep. */
function networkErrorCode(error: unknown): string | undefined {
  for (let cause = error, depth = 0; cause instanceof Error && depth < 4; cause = cause.cause, depth++) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
    if (cause.name === 'AbortError' || cause.name === 'TimeoutError') return 'timed out';
  }
  return undefined;
}

/** A non-tRPC JSON error, such as the daemon's REST shape `{"error": {"message": ...}}`. */
function jsonErrorMessage(json: unknown): string | undefined {
  const message = (json as { error?: { message?: unknown } } | undefined)?.error?.message;
  return typeof message === 'string' ? message : undefined;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
