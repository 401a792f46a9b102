import { describe, expect, it } from 'vitest';
import {
  classifyClose,
  exitedBeforeServing,
  noExportChosen,
  type ClosedAs,
  type ProcessEnd,
} from '../src/supervisor/close-classification.js';

/** A serving process that exited 0 with nothing said, its client never having chosen an export. */
const quiet: ProcessEnd = {
  exitCode: 0,
  signal: null,
  stderr: '',
  killRequested: false,
  negotiated: false,
  refused: false,
  expired: false,
};
const timeoutMs = 10_000;

describe('classifyClose: what an ended nbd-server means for its connection and for health', () => {
  it.each<[why: string, end: Partial<ProcessEnd>, closedAs: ClosedAs]>([
    [
      'a kill the daemon asked for wins over everything else it knew',
      {
        killRequested: true,
        negotiated: true,
        refused: true,
        expired: true,
        exitCode: null,
        signal: 'SIGKILL',
        stderr: 'Error: gone\nExiting.\n',
      },
      { outcome: 'killed', error: 'Error: gone' },
    ],
    [
      'a served client is closed, whatever nbd-server exited with',
      { negotiated: true, exitCode: 1, stderr: 'Error: Connection reset by peer\n' },
      { outcome: 'closed', error: 'Error: Connection reset by peer' },
    ],
    ['a served client that said nothing leaves no error', { negotiated: true }, { outcome: 'closed', error: null }],
    [
      'a client refused by the allow list is not a failure',
      { refused: true, exitCode: 1, stderr: 'Error: prerun failed\n' },
      { outcome: 'not-served', error: 'refused by the export allow list' },
    ],
    [
      'a refusal is told over the deadline that may follow it',
      { refused: true, expired: true, exitCode: null, signal: 'SIGKILL' },
      { outcome: 'not-served', error: 'refused by the export allow list' },
    ],
    [
      'a client cut at the negotiation deadline is not a failure',
      { expired: true, exitCode: null, signal: 'SIGKILL' },
      { outcome: 'not-served', error: noExportChosen(timeoutMs) },
    ],
    ['exit 0 before any export: the client only listed, or left', { exitCode: 0, stderr: '' }, { outcome: 'not-served', error: null }],
    ['SIGPIPE: the client went away mid-reply', { exitCode: null, signal: 'SIGPIPE' }, { outcome: 'not-served', error: null }],
    [
      'the client ended the negotiation',
      { exitCode: 1, stderr: 'Error: Session terminated by client\nExiting.\n' },
      { outcome: 'not-served', error: 'Error: Session terminated by client' },
    ],
    [
      'an unknown export name',
      { exitCode: 1, stderr: 'Error: Negotiation failed/8b: Unknown export name\nExiting.\n' },
      { outcome: 'not-served', error: 'Error: Negotiation failed/8b: Unknown export name' },
    ],
    [
      'a port scan drops the connection',
      { exitCode: 1, stderr: 'Error: Connection dropped\n' },
      { outcome: 'not-served', error: 'Error: Connection dropped' },
    ],
    [
      'a reset connection',
      { exitCode: 1, stderr: 'Error: Connection reset\n' },
      { outcome: 'not-served', error: 'Error: Connection reset' },
    ],
    [
      'a failed read from the client',
      { exitCode: 1, stderr: 'Error: Read failed: Success\n' },
      { outcome: 'not-served', error: 'Error: Read failed: Success' },
    ],
    [
      'a failed write to the client',
      { exitCode: 1, stderr: 'Error: Write failed: Input/output error\n' },
      { outcome: 'not-served', error: 'Error: Write failed: Input/output error' },
    ],
    [
      'a client gone before the greeting was sent',
      { exitCode: 1, stderr: 'Error: Broken pipe\n' },
      { outcome: 'not-served', error: 'Error: Broken pipe' },
    ],
    [
      'any other early exit is nbd-server failing, and says so to health',
      { exitCode: 1, stderr: 'Error: Could not parse config file: Key file contains line “x” which is not a key-value pair\nExiting.\n' },
      {
        outcome: 'failed',
        error: 'Error: Could not parse config file: Key file contains line “x” which is not a key-value pair',
        nbdServerFailed:
          'nbd-server exited before serving (exit 1): Error: Could not parse config file: Key file contains line “x” which is not a key-value pair',
      },
    ],
    [
      'a crash with no message',
      { exitCode: null, signal: 'SIGSEGV' },
      { outcome: 'failed', error: null, nbdServerFailed: 'nbd-server exited before serving (SIGSEGV): no message' },
    ],
  ])('%s', (_why, end, closedAs) => {
    expect(classifyClose({ ...quiet, ...end }, timeoutMs)).toEqual(closedAs);
  });

  it('names the deadline in seconds and the flag that sets it', () => {
    expect(noExportChosen(10_000)).toBe('chose no export within 10 s (--nbd-negotiation-timeout)');
    expect(noExportChosen(2_500)).toBe('chose no export within 2.5 s (--nbd-negotiation-timeout)');
  });

  it.each<[stderr: string, lastWord: string]>([
    ['', 'no message'],
    ['Exiting.\n', 'no message'],
    ['  Error: first\n\nError: last  \nExiting.\n\n', 'Error: last'],
  ])("gives the operator nbd-server's last word on stderr %j: %s", (stderr, lastWord) => {
    expect(exitedBeforeServing(2, null, stderr)).toBe(`nbd-server exited before serving (exit 2): ${lastWord}`);
  });
});
