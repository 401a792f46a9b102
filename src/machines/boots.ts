import { and, eq, inArray, isNull, sql } from 'drizzle-orm';
import type { DataDirSpace } from '../db/data-dir-space.js';
import type { Db } from '../db/open.js';
import { discoveredMachinesTable, exportsTable, exportVersionsTable, machinesTable, type EventRow, type MachineRow } from '../db/schema.js';
import type { EventLog } from '../events/event-log.js';
import { machineStages, type MachineStage } from '../model/event-map.js';
import type { SummarisedEvents } from '../events/summarised-events.js';
import { errorText, type Logger } from '../log.js';
import type { MachineRegistry } from './registry.js';
import type { Effective } from '../profiles/fields.js';

/** A machine as its boot sees it: its row and what it boots with. */
export type BootingMachine = MachineRow & { effective: Effective };

/** What a machine's boot reports itself (the initramfs, then the booted system). */
export const reportedStages = ['root', 'up', 'failed'] as const;
export type ReportedStage = (typeof reportedStages)[number];

/** The furthest stage of a boot's way up that its timeline reached; null before its script. */
function furthestStage(timeline: MachineRow['timeline']): MachineStage | null {
  return machineStages.slice(0, machineStages.indexOf('up') + 1).findLast((stage) => timeline[stage] !== undefined) ?? null;
}

/** Unknown MACs remembered, the newest. */
const maxDiscovered = 1000;

/** A report's text is kept, shown and logged: bounded, one line per line, printable only. */
export const maxReportBytes = 4096;

export type ReportOutcome = { ok: true } | { ok: false; status: 403 | 409; message: string };

/** The stages a boot passes before its root is up: a file fetched or a connection made in them moves it on. */
const booting: readonly MachineStage[] = ['script', 'kernel', 'initrd'];

/**
 * Where each machine's boot is, from what nbdmux sees of it: its script fetched, its kernel and
 * initramfs, its NBD connection (matched by the address that fetched the script), and the
 * reports of ramboot and of the booted system. Each step is stored and recorded as an event.
 */
export class MachineBoots {
  constructor(
    private readonly db: Db,
    private readonly events: EventLog,
    /** Where `machine.discovered` goes: any client can make up MACs, so their events are summarised. */
    private readonly summarised: Pick<SummarisedEvents, 'record'>,
    private readonly machines: MachineRegistry,
    /** A full data dir loses the stages, never a boot: writes that cannot be made are skipped. */
    private readonly space: Pick<DataDirSpace, 'tryWrite'>,
    log: Logger,
  ) {
    events.on('event', (event) => {
      // Called inside whatever recorded the event (a connection closing): a stage must never break it.
      try {
        this.observe(event);
      } catch (err) {
        log.warn('a machine stage was not recorded', { event: event.type, error: errorText(err) });
      }
    });
  }

  /**
   * A machine asked for its script from `client`: a new boot. Its state becomes visible to this
   * address alone. Undefined for an unknown MAC, which is recorded as discovered.
   */
  scriptFetched(mac: string, client: string): MachineRow | undefined {
    const known = this.lookup(mac);
    if (known === undefined) {
      this.discovered(mac, client);
      return undefined;
    }
    const now = new Date().toISOString();
    const boot = {
      address: client,
      lastSeenAt: now,
      stage: 'script',
      stageAt: now,
      stageDetail: null,
      timeline: { script: now },
      rootConnectionId: null,
      bootedVersionId: this.currentVersionOf(known.effective.exportId),
    } as const;
    const row = this.space.tryWrite(
      () => this.db.update(machinesTable).set(boot).where(eq(machinesTable.id, known.id)).returning().all()[0]!,
    );
    if (row === undefined) return { ...known, ...boot };
    // What this boot is served changed only with a state, an address or a version: a boot storm of
    // machines booting again as they did before rewrites no config.
    if (known.effective.persistent || known.address !== row.address || known.bootedVersionId !== row.bootedVersionId)
      this.machines.applyMachines();
    this.recordStage(row, 'script');
    return row;
  }

  /** The version a boot of the export would be served now; null when there is none to boot. */
  private currentVersionOf(exportId: number | null): number | null {
    if (exportId === null) return null;
    const exp = this.db
      .select({ currentVersionId: exportsTable.currentVersionId })
      .from(exportsTable)
      .where(and(eq(exportsTable.id, exportId), isNull(exportsTable.removedAt)))
      .get();
    return exp?.currentVersionId ?? null;
  }

  /** The machine of a MAC, as it is: what a HEAD of its script answers about, changing nothing. */
  lookup(mac: string): BootingMachine | undefined {
    const row = this.machines.find(mac);
    return row === undefined ? undefined : { ...row, effective: this.machines.effective(row) };
  }

  /**
   * A boot file of `exportName` went to `client`: the machine booting it from there moves on.
   * `mac`, from its script's URL, says which one; it counts only from that machine's boot address.
   */
  fileFetched(client: string, exportName: string, stage: 'kernel' | 'initrd', mac?: string, detail: string | null = null): void {
    const row = this.bootingFrom(client, exportName, mac);
    if (row) this.moveTo(row, stage, detail);
  }

  /** A report from the machine's initramfs or booted system; refused unless it comes from the address of its current boot. */
  report(mac: string, client: string, stage: ReportedStage, text: string): ReportOutcome {
    const row = this.lookup(mac);
    // The same answer for an unknown MAC and a known one from elsewhere: a report cannot probe for machines.
    if (row === undefined || row.address !== client) {
      return {
        ok: false,
        status: 403,
        message: `no machine with MAC ${mac} is booting from ${client}: a machine reports from the address that fetched its script`,
      };
    }
    if (row.timeline[stage] !== undefined) {
      return { ok: false, status: 409, message: `machine ${row.name} already reported ${stage} in this boot` };
    }
    if (row.stage === 'failed') {
      return {
        ok: false,
        status: 409,
        message: `the boot of machine ${row.name} has ended (failed): a report belongs to a boot in progress, and the next one begins with its script`,
      };
    }
    // A boot only moves on: `failed` may end it at any stage, the others only follow the furthest
    // stage it reached. `off` and `reconnected` are what nbdmux saw of its root's connection, not
    // where the machine is: one that lost its connection may reconnect, and report, in the same boot.
    const reached = row.stage === 'off' || row.stage === 'reconnected' ? furthestStage(row.timeline) : row.stage;
    if (stage !== 'failed' && reached !== null && machineStages.indexOf(stage) < machineStages.indexOf(reached)) {
      return {
        ok: false,
        status: 409,
        message: `machine ${row.name} is at stage ${reached}: a report of ${stage} would move its boot backwards`,
      };
    }
    this.moveTo(row, stage, cleanReport(text));
    return { ok: true };
  }

  private observe(event: EventRow): void {
    if (event.type === 'connection.negotiated' && event.exportName !== null) {
      const booting = this.bootingFrom(event.details.client, event.exportName);
      if (booting) return this.moveTo(booting, 'attached', null, { rootConnectionId: event.details.connection });
      const lost = this.reconnecting(event.details.client, event.exportName);
      if (lost) {
        const seconds = ((Date.now() - Date.parse(lost.stageAt!)) / 1000).toFixed(1);
        this.moveTo(lost, 'reconnected', `its root attached again ${seconds} s after its connection was seen closed`, {
          rootConnectionId: event.details.connection,
        });
      }
    } else if (event.type === 'connection.closed') {
      const row = this.db.select().from(machinesTable).where(eq(machinesTable.rootConnectionId, event.details.connection)).get();
      if (row === undefined || row.stage === 'failed' || row.stage === 'off') return;
      // Only a report says a boot failed: an image without systemd never reports up, and powers off all the same.
      this.moveTo(
        row,
        'off',
        row.stage === 'up' ? null : `its root's NBD connection closed at stage ${row.stage}, before the system reported up`,
      );
    }
  }

  /**
   * The machine whose current boot, from `client`, is booting `exportName` and has not attached
   * yet: the one of `mac` if given. Of several behind one address (a NAT) an NBD connection names
   * none, so it goes to the one that reached its stage first, as it most likely asked first.
   */
  private bootingFrom(client: string, exportName: string, mac?: string): MachineRow | undefined {
    const exp = this.db
      .select({ id: exportsTable.id })
      .from(exportsTable)
      .where(and(eq(exportsTable.name, exportName), isNull(exportsTable.removedAt)))
      .get();
    if (exp === undefined) return undefined;
    // Its export may be its own or its profile's: only the effective fields say which it boots.
    return this.db
      .select()
      .from(machinesTable)
      .where(
        and(
          eq(machinesTable.address, client),
          inArray(machinesTable.stage, [...booting]),
          mac === undefined ? undefined : eq(machinesTable.mac, mac),
        ),
      )
      .orderBy(machinesTable.stageAt)
      .all()
      .find((row) => this.machines.effective(row).exportId === exp.id);
  }

  /** The machine whose current boot, from `client`, booted `exportName` and lost its root's connection. */
  private reconnecting(client: string, exportName: string): MachineRow | undefined {
    return this.db
      .select({ machine: machinesTable })
      .from(machinesTable)
      .innerJoin(exportVersionsTable, eq(exportVersionsTable.id, machinesTable.bootedVersionId))
      .innerJoin(exportsTable, eq(exportsTable.id, exportVersionsTable.exportId))
      .where(and(eq(machinesTable.address, client), eq(exportsTable.name, exportName), eq(machinesTable.stage, 'off')))
      .get()?.machine;
  }

  private moveTo(row: MachineRow, stage: MachineStage, detail: string | null, more: Partial<MachineRow> = {}): void {
    const now = new Date().toISOString();
    const moved = this.space.tryWrite(
      () =>
        this.db
          .update(machinesTable)
          .set({ stage, stageAt: now, stageDetail: detail, lastSeenAt: now, timeline: { ...row.timeline, [stage]: now }, ...more })
          .where(eq(machinesTable.id, row.id))
          .returning()
          .all()[0]!,
    );
    if (moved !== undefined) this.recordStage(moved, stage);
  }

  private recordStage(row: MachineRow, stage: MachineStage): void {
    this.events.record('machine.stage', this.machines.exportName(this.machines.effective(row).exportId), {
      mac: row.mac,
      name: row.name,
      stage,
      client: row.address ?? '',
      ...(row.stageDetail !== null && { detail: row.stageDetail }),
    });
  }

  private discovered(mac: string, client: string): void {
    const now = new Date().toISOString();
    const row = this.space.tryWrite(
      () =>
        this.db
          .insert(discoveredMachinesTable)
          .values({ mac, address: client, firstSeenAt: now, lastSeenAt: now })
          .onConflictDoUpdate({
            target: discoveredMachinesTable.mac,
            set: { address: client, lastSeenAt: now, requests: sql`${discoveredMachinesTable.requests} + 1` },
          })
          .returning()
          .all()[0]!,
    );
    if (row === undefined || row.requests > 1) return;
    this.summarised.record('machine.discovered', null, { mac, client });
    // Any client may send any MAC: only the newest are worth keeping.
    this.space.tryWrite(() =>
      this.db.run(
        sql`DELETE FROM discovered_machines WHERE mac NOT IN (SELECT mac FROM discovered_machines ORDER BY last_seen_at DESC LIMIT ${maxDiscovered})`,
      ),
    );
  }
}

/** Printable ASCII lines only (a console line's escape codes and NULs go), at most maxReportBytes. */
function cleanReport(text: string): string {
  return text
    .replace(/\r\n?/g, '\n')
    .replace(/[^\n\x20-\x7e]/g, '?')
    .slice(0, maxReportBytes)
    .trimEnd();
}
