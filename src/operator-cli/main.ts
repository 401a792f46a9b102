#!/usr/bin/env node
import { createNbdmuxClient } from '../client.js';
import { cleanText } from '../untrusted-text.js';
import { version } from '../version.js';
import { parseCommandLine, usage, type Request } from './args.js';
import { commands } from './commands.js';
import { describeFailure } from './failure.js';
import { endQuietlyWhenReaderLeaves, terminalSafe } from './output.js';

endQuietlyWhenReaderLeaves(process.stdout);
const password = process.env.NBDMUX_ADMIN_PASSWORD || undefined;
let request: Request | undefined;
try {
  request = parseCommandLine(process.argv.slice(2), process.env);
  if (request.kind === 'help') process.stdout.write(usage);
  else if (request.kind === 'version') process.stdout.write(`nbdmux ${version}\n`);
  else {
    const { invocation } = request;
    const client = createNbdmuxClient({ url: invocation.url, password });
    process.exitCode = await commands[invocation.command](client, invocation, terminalSafe(process.stdout));
  }
} catch (err) {
  const url = request?.kind === 'run' ? request.invocation.url : '';
  const command = request?.kind === 'run' ? request.invocation.command : undefined;
  const failure = describeFailure(err, { url, passwordSet: password !== undefined });
  // The message may quote the daemon, or whatever answered at its URL.
  process.stderr.write(`nbdmux${command === undefined ? '' : ` ${command}`}: ${cleanText(failure.message)}\n`);
  process.exitCode = failure.exitCode;
}
// Ctrl-C means now: while the daemon is away, a pending reconnect timer would hold watch up to 2 s.
if (request?.kind === 'run' && request.invocation.command === 'watch') process.exit();
