import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import { AuthGate } from './auth/gate.js';
import { loadSessionSecret } from './auth/secret.js';
import type { Config } from './config.js';
import { openDatabase, type Db } from './db/open.js';
import { EventLog } from './events/event-log.js';
import { PinnedFiles } from './exports/pinned-files.js';
import { ExportRegistry, servedExports } from './exports/registry.js';
import type { Logger } from './log.js';
import { startHttpServer, type HttpServer } from './server.js';
import { AllowList } from './supervisor/allow-list.js';
import { Supervisor } from './supervisor/index.js';
import { version } from './version.js';

export interface Daemon {
  http: net.AddressInfo;
  nbd: net.AddressInfo;
  /** Stops both listeners and closes the database. Serving nbd-server processes keep running. */
  close(): Promise<void>;
}

/** Starts every part in dependency order; if one fails, stops the ones already started and rethrows. */
export async function startDaemon(config: Config, log: Logger): Promise<Daemon> {
  prepareDataDir(config.dataDir);
  if (config.imageRoots.length === 0) {
    log.warn('no --image-root set: any file nbdmux can read may be exported; set --image-root to confine exports');
  }
  if (config.adminPassword === undefined) {
    log.warn('NBDMUX_ADMIN_PASSWORD is not set: anyone who reaches the HTTP port can change exports');
  }
  const secret = config.adminPassword === undefined ? undefined : loadSessionSecret(config.dataDir, config.sessionSecret);
  const db = openDatabase(path.join(config.dataDir, 'state.db'));
  let supervisor: Supervisor | undefined;
  let http: HttpServer | undefined;
  try {
    const events = new EventLog(db);
    const pins = PinnedFiles.reopen(db, events, log);
    supervisor = await Supervisor.start(
      {
        dataDir: config.dataDir,
        nbdServerBin: config.nbdServerBin,
        nbdPort: config.nbdPort,
        nbdBind: config.nbdBind,
        maxConnections: config.maxConnections,
        nbdAllow: new AllowList(config.nbdAllow),
        db,
        events,
        log,
      },
      servedExports(db, (id) => pins.fdOf(id)),
    );
    const registry = new ExportRegistry(db, supervisor, events, pins, config.imageRoots);
    const gate = new AuthGate(config.adminPassword, secret, events);
    const context = { registry, events, dataPlane: supervisor, info: { version, authRequired: gate.required } };
    http = await startHttpServer({ port: config.port, bind: config.bind, context, gate, log });
    const nbd = supervisor.address!;
    events.record('daemon.started', null, { http: http.address.port, nbd: nbd.port, pid: process.pid });
    pins.startChecking();
    const running = { http, supervisor };
    return {
      http: http.address,
      nbd,
      close: async () => {
        pins.stop();
        await Promise.all([running.http.close(), running.supervisor.stop()]);
        events.record('daemon.stopped', null, { pid: process.pid });
        db.$client.close();
      },
    };
  } catch (err) {
    await Promise.all([http?.close(), supervisor?.stop()]);
    closeQuietly(db);
    throw err;
  }
}

/** Creates the data dir and proves it writable now, rather than failing on the first change. */
function prepareDataDir(dataDir: string): void {
  try {
    fs.mkdirSync(dataDir, { recursive: true });
    const probe = path.join(dataDir, `.write-test-${process.pid}`);
    fs.writeFileSync(probe, '');
    fs.unlinkSync(probe);
  } catch (err) {
    throw new Error(`data dir ${dataDir} cannot be created or written: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function closeQuietly(db: Db): void {
  try {
    db.$client.close();
  } catch {
    // Already failing: the first error is the one to report.
  }
}
