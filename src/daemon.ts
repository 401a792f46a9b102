import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import { AuthGate } from './auth/gate.js';
import { RevokedSessions } from './auth/revocations.js';
import { loadSessionSecret } from './auth/secret.js';
import { noKitArtifacts } from './boot/artifacts.js';
import { ImageBootArtifacts } from './boot/boot-files.js';
import { bootRoutes } from './http/boot-routes.js';
import type { Config } from './config.js';
import { DataDirSpace } from './db/data-dir-space.js';
import { openDatabase, type Db } from './db/open.js';
import { EventLog } from './events/event-log.js';
import { SummarisedEvents } from './events/summarised-events.js';
import { BootableExports } from './exports/bootable.js';
import { PinnedFiles } from './exports/pinned-files.js';
import { ExportRegistry } from './exports/registry.js';
import { servedExports } from './exports/served.js';
import { MachineBoots } from './machines/boots.js';
import { MachineSeeds } from './machines/seeds.js';
import { MachineRegistry } from './machines/registry.js';
import { ProfileRegistry } from './profiles/registry.js';
import { servedMachineExports } from './machines/served.js';
import { StateFiles } from './machines/state-files.js';
import { defaultMinRate, Importer } from './images/importer.js';
import { errorText, type Logger } from './log.js';
import { Metrics } from './metrics.js';
import { Retention } from './retention.js';
import { replayCap } from './router/events.js';
import { startHttpServer, type HttpServer } from './http/server.js';
import { AllowList } from './rules/allow-list.js';
import { Supervisor } from './supervisor/index.js';
import { version } from './version.js';
import { createPower, type Power } from './power/index.js';

/** How often imported files that no version needs any more are looked for (one small query). */
const garbageCheckMs = 5000;

export interface Daemon {
  http: net.AddressInfo;
  nbd: net.AddressInfo;
  /** Stops both listeners and closes the database. Serving nbd-server processes keep running. */
  close(): Promise<void>;
}

/** Starts every part in dependency order; if one fails, stops the ones already started and rethrows. */
export async function startDaemon(config: Config, log: Logger): Promise<Daemon> {
  // The data dir holds export paths, client addresses, events and the cookie-signing secret, and
  // cow diffs hold what machines wrote: private to this user whatever umask it was started with.
  // nbd-server children inherit the umask, so their files are private too.
  process.umask(0o077);
  prepareDataDir(config.dataDir, log);
  if (config.imageRoots.length === 0) {
    log.warn('no --image-root set: any file nbdmux can read may be exported; set --image-root to confine exports');
  }
  if (config.adminPassword === undefined) {
    log.warn('NBDMUX_ADMIN_PASSWORD is not set: anyone who reaches the HTTP port can change exports');
  }
  const nbdAllow = new AllowList(config.nbdAllow);
  const secret = config.adminPassword === undefined ? undefined : loadSessionSecret(config.dataDir, config.sessionSecret);
  const db = openDatabase(path.join(config.dataDir, 'state.db'));
  const space = new DataDirSpace(config.dataDir, log);
  let supervisor: Supervisor | undefined;
  let http: HttpServer | undefined;
  let metrics: Metrics | undefined;
  let bootEvents: SummarisedEvents | undefined;
  let power: Power | undefined;
  try {
    const events = new EventLog(db, space);
    const pins = PinnedFiles.reopen(db, events, log);
    // Before the ports open: a --ramboot-kit that is not a kit is refused at once.
    const { rambootKit } = config;
    const artifacts =
      rambootKit === undefined
        ? noKitArtifacts
        : await ImageBootArtifacts.open({ db, pins, kitDir: rambootKit, dataDir: config.dataDir, log });
    const stateFiles = new StateFiles(path.join(config.dataDir, 'machines'));
    supervisor = await Supervisor.start(
      {
        dataDir: config.dataDir,
        nbdServerBin: config.nbdServerBin,
        nbdPort: config.nbdPort,
        nbdBind: config.nbdBind,
        maxConnections: config.maxConnections,
        maxPendingPerClient: config.nbdMaxPendingPerClient,
        negotiationTimeoutMs: config.nbdNegotiationTimeout * 1000,
        warmPool: config.nbdWarmPool,
        nbdAllow,
        db,
        events,
        space,
        log,
      },
      servedExports(db, (id) => pins.fdOf(id)),
      servedMachineExports(db, stateFiles, pins),
    );
    // The store is always an image root; with no roots at all, any file may be exported anyway.
    const imageRoots = config.imageRoots.length === 0 ? [] : [...config.imageRoots, config.imageStore];
    const importer = new Importer({
      storeDir: config.imageStore,
      maxImports: config.maxImports,
      imageRoots,
      minRate: { ...defaultMinRate, bytes: config.importMinRate },
      toolIdleMs: config.importToolTimeout * 1000,
      log,
    });
    const registry = new ExportRegistry(db, supervisor, events, pins, {
      imageRoots,
      keepVersions: config.keepVersions,
      importer,
      boot: artifacts,
      log,
    });
    registry.failInterruptedImports();
    // Files the last run could not delete yet (a connection still held them).
    registry.collectGarbage();
    const machines = new MachineRegistry(db, supervisor, events, stateFiles, pins);
    power = createPower(db, events, machines);
    power.poller.start();
    const gate = new AuthGate(config.adminPassword, secret, events, new RevokedSessions(db));
    const nbdPublicPort = config.nbdPublicPort ?? supervisor.address!.port;
    const services = {
      registry,
      machines,
      profiles: new ProfileRegistry(db, machines, events, stateFiles),
      power,
      events,
      space,
      dataPlane: supervisor,
      info: { version, authRequired: gate.required },
      nbdPublicPort,
    };
    metrics = new Metrics({ events, connections: supervisor.connections, exports: registry });
    bootEvents = new SummarisedEvents(events);
    const bootable = new BootableExports(db);
    const boot = bootRoutes({
      exports: bootable,
      artifacts,
      events: bootEvents,
      machines: new MachineBoots(db, events, bootEvents, machines, space, log),
      seeds: new MachineSeeds(db, bootable),
      nbdAllow,
      nbdPublicPort,
      bootDefault: config.bootDefault ?? null,
      menuTimeoutMs: config.bootMenuTimeout * 1000,
      log,
    });
    http = await startHttpServer({ config, services, metrics, gate, boot, log });
    const nbd = supervisor.address!;
    events.record('daemon.started', null, { http: http.address.port, nbd: nbd.port, pid: process.pid });
    pins.startChecking();
    const retention = new Retention(db, { retainDays: config.retainDays, keepNewestEvents: replayCap, log });
    retention.start();
    // A version's last connection gone may free its stored file: looked for every few seconds.
    const collecting = setInterval(() => registry.collectGarbage(), garbageCheckMs).unref();
    const running = { http, supervisor, metrics };
    return {
      http: http.address,
      nbd,
      close: async () => {
        pins.stop();
        clearInterval(collecting);
        await Promise.all([running.http.close(), running.supervisor.stop(), retention.stop(), power?.poller.stop()]);
        running.metrics.stop();
        bootEvents?.stop();
        events.record('daemon.stopped', null, { pid: process.pid });
        space.stop();
        db.$client.close();
      },
    };
  } catch (err) {
    await Promise.all([http?.close(), supervisor?.stop(), power?.poller.stop()]);
    metrics?.stop();
    bootEvents?.stop();
    space.stop();
    closeQuietly(db);
    throw err;
  }
}

/**
 * Creates the data dir and proves it writable now, rather than failing on the first change; then
 * takes group and other access away from it and from what is in it, which an older nbdmux (or
 * one started under umask 022) left readable.
 */
function prepareDataDir(dataDir: string, log: Logger): void {
  try {
    fs.mkdirSync(dataDir, { recursive: true });
    const probe = path.join(dataDir, `.write-test-${process.pid}`);
    fs.writeFileSync(probe, '');
    fs.unlinkSync(probe);
  } catch (err) {
    throw new Error(`data dir ${dataDir} cannot be created or written: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      cause: err,
    });
  }
  makePrivate(fs.realpathSync(dataDir), log);
}

/** Removes group and other permissions from `file` and, for a directory, everything under it; symlinks are left alone. */
function makePrivate(file: string, log: Logger): void {
  try {
    const stat = fs.lstatSync(file);
    if (stat.isSymbolicLink()) return;
    if ((stat.mode & 0o077) !== 0) fs.chmodSync(file, stat.mode & 0o700);
    if (stat.isDirectory()) for (const entry of fs.readdirSync(file)) makePrivate(path.join(file, entry), log);
  } catch (err) {
    // Removed meanwhile (a cow diff whose connection ended), or owned by someone else: serving
    // still works, so say what to fix rather than refuse to start.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    log.warn('cannot make a data dir entry private: other local users may read it; chmod go= it', { file, error: errorText(err) });
  }
}

function closeQuietly(db: Db): void {
  try {
    db.$client.close();
  } catch {
    // Already failing: the first error is the one to report.
  }
}
