import fs from 'node:fs';
import { TRPCError } from '@trpc/server';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { afterAll, beforeAll } from 'vitest';
import { describeError, type ErrorDescription } from '../../src/errors.js';
import { noKitArtifacts } from '../../src/boot/artifacts.js';
import { DataDirSpace } from '../../src/db/data-dir-space.js';
import type { Db } from '../../src/db/open.js';
import { EventLog } from '../../src/events/event-log.js';
import { SummarisedEvents } from '../../src/events/summarised-events.js';
import type { Actor } from '../../src/model/event-map.js';
import { PinnedFiles } from '../../src/exports/pinned-files.js';
import { ExportRegistry } from '../../src/exports/registry.js';
import type { DataPlane } from '../../src/exports/served.js';
import { Importer } from '../../src/images/importer.js';
import { createLogger, errorText } from '../../src/log.js';
import { createCaller, type Context } from '../../src/router/index.js';
import { MachineBoots } from '../../src/machines/boots.js';
import { MachineRegistry, type MachineDataPlane } from '../../src/machines/registry.js';
import { ProfileRegistry } from '../../src/profiles/registry.js';
import { StateFiles } from '../../src/machines/state-files.js';
import { createPower, type Power } from '../../src/power/index.js';
import type { PowerOptions } from '../../src/power/control.js';
import type { BootedVersion, LiveConnection, MachineExports, ServedExport, ServedState } from '../../src/supervisor/index.js';
import { tempDir } from '../../testkit/daemon.js';
import { makeImage } from '../../testkit/nbd.js';
import { memoryDatabase } from './db.js';

/**
 * A stand-in for the supervisor that records what the control plane asks of it. The registry's
 * and the router's rules do not need a real nbd-server: what they owe the data plane is the list
 * of exports to serve, handed over in the same step as the commit, and the connections to cut.
 * What nbd-server does with them is shown end to end by the tests that start the daemon.
 */
export class RecordingDataPlane implements DataPlane, MachineDataPlane {
  /** Every export list handed over, in order. */
  readonly applied: ServedExport[][] = [];
  /** Every list of machine states handed over, in order. */
  readonly appliedStates: ServedState[][] = [];
  readonly appliedBooted: BootedVersion[][] = [];
  /** Live connections as machines see them, as the test sets them. */
  readonly liveConnections: Array<Pick<LiveConnection, 'id' | 'machineId'>> = [];
  /** Live connections per export id, as the test sets them. */
  readonly live = new Map<number, number>();
  /** Live connections per version id, as the test sets them. */
  readonly liveByVersion = new Map<number, number>();
  /** The export ids of each kill asked for. */
  readonly kills: number[][] = [];
  /** The arguments of each connections.recent call. */
  readonly recentAsked: Array<{ limit: number; live: boolean }> = [];
  /** Thrown by the next applyExports, as a config write that fails would be. */
  failNextApply: Error | null = null;

  constructor(readonly cowDir: string) {}

  applyExports(exports: readonly ServedExport[]): void {
    const failure = this.failNextApply;
    this.failNextApply = null;
    if (failure) throw failure;
    this.applied.push([...exports]);
  }

  applyMachines({ states, booted }: MachineExports): void {
    this.appliedStates.push([...states]);
    this.appliedBooted.push([...booted]);
  }

  readonly connections = {
    list: () => this.liveConnections as LiveConnection[],
    countByExport: () => new Map(this.live),
    countByVersion: () => new Map(this.liveByVersion),
    kill: (exportIds: ReadonlySet<number>) => {
      this.kills.push([...exportIds]);
      let killed = 0;
      for (const id of exportIds) {
        killed += this.live.get(id) ?? 0;
        this.live.delete(id);
      }
      return killed;
    },
    recent: (limit: number, live: boolean) => {
      this.recentAsked.push({ limit, live });
      return [];
    },
  };
}

export interface TestControlPlane {
  db: Db;
  dataPlane: RecordingDataPlane;
  events: EventLog;
  space: DataDirSpace;
  registry: ExportRegistry;
  machines: MachineRegistry;
  profiles: ProfileRegistry;
  /** The machines' boots, as the boot routes drive them. */
  boots: MachineBoots;
  /** Where persistent machines' state files are made (real mkfs.ext4). */
  stateFiles: StateFiles;
  power: Power;
  context: Context;
  caller: ReturnType<typeof createCaller>;
  /** Every log line written, parsed. */
  logs: Array<Record<string, unknown>>;
  close(): void;
}

/** Who the in-memory tests act as: no admin password, from loopback. */
export const testActor: Actor = { actor: 'open', client: '127.0.0.1' };

/**
 * The control plane as the daemon wires it (src/daemon.ts), on a migrated in-memory database and
 * a recording data plane: the one place tests build a router context.
 */
export function testControlPlane(
  options: { imageRoots?: string[]; cowDir?: string; keepVersions?: number; power?: PowerOptions & { pollIntervalMs: number } } = {},
): TestControlPlane {
  const dataDir = tempDir('nbdmux-memory-');
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger('debug', (line) => logs.push(JSON.parse(line) as Record<string, unknown>));
  const db = memoryDatabase();
  const space = new DataDirSpace(dataDir, log);
  const events = new EventLog(db, space);
  const dataPlane = new RecordingDataPlane(options.cowDir ?? `${dataDir}/cow`);
  const pins = PinnedFiles.reopen(db, events, log);
  const imageRoots = options.imageRoots ?? [];
  const importer = new Importer({ storeDir: `${dataDir}/images`, maxImports: 2, imageRoots, log });
  const registry = new ExportRegistry(db, dataPlane, events, pins, {
    imageRoots,
    keepVersions: options.keepVersions ?? 3,
    importer,
    boot: noKitArtifacts,
    log,
  });
  const stateFiles = new StateFiles(`${dataDir}/machines`);
  const machines = new MachineRegistry(db, dataPlane, events, stateFiles, pins);
  const bootEvents = new SummarisedEvents(events);
  const boots = new MachineBoots(db, events, bootEvents, machines, space, log);
  const profiles = new ProfileRegistry(db, machines, events, stateFiles);
  // Not started: a test polls when it wants to (power.poller.pollOnce()).
  const power = createPower(db, events, machines, options.power);
  const context: Context = {
    registry,
    machines,
    profiles,
    power,
    events,
    space,
    info: { version: 'test', authRequired: false },
    nbdPublicPort: 10809,
    caller: { ok: true, identity: { via: 'open' }, client: testActor.client },
    // createCaller has no HTTP request to take an address from: the one a loopback request would give.
    endpoint: () => ({ httpBase: 'http://127.0.0.1:4040', nbdHost: '127.0.0.1', nbdPort: 10809 }),
    // Health probes the real nbd-server binary and listener: the end-to-end tests cover it.
    dataPlane: {
      health: () => Promise.reject(new Error('no health without a real data plane')),
      connections: dataPlane.connections,
      maxConnections: 256,
    },
  };
  return {
    db,
    dataPlane,
    events,
    space,
    registry,
    machines,
    profiles,
    boots,
    stateFiles,
    power,
    context,
    caller: createCaller(context),
    logs,
    close: () => {
      bootEvents.stop();
      space.stop();
      db.$client.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** What REST would answer for the error a call threw: its HTTP status and its JSON error. Throws when the call was not refused. */
export async function refusal(call: () => Promise<unknown>): Promise<{ status: number; error: ErrorDescription }> {
  let thrown: unknown;
  try {
    await call();
  } catch (err) {
    thrown = err;
  }
  if (!(thrown instanceof TRPCError))
    throw new Error(`expected a refusal (a TRPCError), got ${thrown === undefined ? 'success' : errorText(thrown)}`);
  return { status: getHTTPStatusCodeFromError(thrown), error: describeError(thrown) };
}

/** One small image file under an image root, made once for a describe block's createCaller tests and removed after them. */
export function sharedImage(): { readonly root: string; readonly file: string } {
  let root = '';
  let file = '';
  beforeAll(() => {
    root = fs.realpathSync(tempDir('nbdmux-images-'));
    file = makeImage(root, 'disk.img', 8192);
  });
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  return {
    get root() {
      return root;
    },
    get file() {
      return file;
    },
  };
}
