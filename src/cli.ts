#!/usr/bin/env node
import { ConfigError, parseCommandLine, usage } from './config.js';
import { startDaemon } from './daemon.js';
import { errorText, createLogger } from './log.js';
import { version } from './version.js';

function fail(message: string, exitCode: number): never {
  process.stderr.write(`nbdmux-server: ${message}\n`);
  process.exit(exitCode);
}

let request;
try {
  request = parseCommandLine(process.argv.slice(2), process.env);
} catch (err) {
  if (err instanceof ConfigError) fail(err.message, 2);
  throw err;
}
if (request.kind === 'help') {
  process.stdout.write(usage);
  process.exit(0);
}
if (request.kind === 'version') {
  process.stdout.write(`nbdmux-server ${version}\n`);
  process.exit(0);
}

const { config } = request;
const log = createLogger(config.logLevel);
const daemon = await startDaemon(config, log).catch((err: Error) => fail(err.message, 1));
keepServingAfterBugs();
stopOnSignals();
log.info('nbdmux listening', {
  version,
  http: `${daemon.http.address}:${daemon.http.port}`,
  httpPort: daemon.http.port,
  nbd: `${daemon.nbd.address}:${daemon.nbd.port}`,
  nbdPort: daemon.nbd.port,
  dataDir: config.dataDir,
});

/**
 * The last resort once the daemon serves: an error no handler caught (a bug reached by one
 * request or connection) is logged with its stack instead of ending the process, so every other
 * client, and every NBD connection being started, is still served.
 */
function keepServingAfterBugs(): void {
  const report = (msg: string) => (err: unknown) => log.error(msg, { error: errorText(err) });
  process.on('uncaughtException', report('uncaught error; nbdmux keeps serving'));
  process.on('unhandledRejection', report('unhandled promise rejection; nbdmux keeps serving'));
}

/** Installed before the ready line, so a supervisor that signals as soon as it sees it gets a clean stop. */
function stopOnSignals(): void {
  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      log.info('stopping; live NBD connections keep being served', { signal });
      daemon.close().then(
        () => process.exit(0),
        (err: Error) => fail(`error while stopping: ${err.message}`, 1),
      );
    });
  }
}
