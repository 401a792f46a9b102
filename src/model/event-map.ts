/**
 * Every kind of event and the details it carries: the one list the event log, the database
 * column, the dashboard and the CLI are typed by. A new kind added here is a compile error in
 * every consumer until it says how to show it. Types only: the dashboard's bundle imports it.
 */
export interface EventDetails {
  'daemon.started': { http: number; nbd: number; pid: number };
  'daemon.stopped': { pid: number };
  /** The data dir had space again after `fullSince`; `notRecorded` events were lost meanwhile. */
  'daemon.space-recovered': { dataDir: string; fullSince: string; notRecorded: number };
  /** `cmdline`: the kernel arguments its boot script passes (absent in events from before boot scripts). */
  'export.created': {
    id: number;
    file: string;
    readonly: boolean;
    cow: boolean;
    allow: string[];
    cmdline?: string;
    size: number;
  } & ActedBy;
  /** `version` of the export became current (`update`: a file; `import`: a finished import; `rollback`: an earlier one again): new clients get `file`. */
  'export.version-switched': { id: number; version: number; file: string; reason: 'update' | 'import' | 'rollback' } & ActedBy;
  /** An import of `url` as `version` of the export began (queued, then running). */
  'import.started': { id: number; version: number; url: string } & ActedBy;
  /** The imported image is complete and checked; it became current unless a newer version already was. */
  'import.done': { id: number; version: number; file: string; size: number; sha256: string };
  /** `reason`: the importer's code (`dns`, `http-status`, `sha256-mismatch`, `no-space`...) or `interrupted` (nbdmux stopped). */
  'import.failed': { id: number; version: number; reason: string; error: string };
  'import.cancelled': { id: number; version: number };
  'export.removed': { id: number; force: boolean; liveConnections: number } & ActedBy;
  /** The registered path now leads elsewhere (`pathLeadsTo`), or back; what clients get meanwhile is `serving`. */
  'export.file-changed': {
    id: number;
    file: string;
    pathLeadsTo: 'another file' | 'nothing' | 'the registered file';
    serving: 'the registered file' | 'nothing';
  };
  'connection.opened': { connection: number; client: string; port: number };
  /** `machineState`: the machine whose persistent state it attached (the event then names no export). */
  'connection.negotiated': { connection: number; client: string; machineState?: number };
  'connection.closed': {
    connection: number;
    client: string;
    outcome: 'closed' | 'not-served' | 'failed' | 'killed';
    bytesSent: number;
    exitCode?: number;
    signal?: string;
    error?: string;
  };
  /**
   * The first refusal of a kind (`port` set, `count` 1), or how many more came `since` then
   * (see RefusalSummary). `client` is `*` for kinds beyond the summary's limit, counted together.
   */
  'connection.refused': { client: string; port?: number; reason: string; count: number; since?: string };
  'connection.adopted': { connection: number; pid: number | null };
  /**
   * The first failed start of a reason (`connection`, `client`, `count` 1), or how many more
   * failed for it `since` then (see StartFailures). Events from before the count have neither.
   */
  'nbd-server.failed': { connection?: number; client?: string; reason: string; count?: number; since?: string };
  /** nbd-server served again after `failedStarts` failed starts since `failingSince`. */
  'nbd-server.recovered': { failingSince: string; failedStarts: number; lastReason: string };
  /** `actor`: the session this login opened, as the changes it makes name it. */
  'auth.login-succeeded': { client: string; actor?: SessionActor };
  'auth.login-failed': { client: string; via: 'bearer' | 'login' };
  'auth.logout': { client: string; actor?: SessionActor };
  /**
   * A machine fetched an export's iPXE script, or the menu (`menu`: the exports it offered, comma-separated); 304 when unchanged.
   * The boot events are summarised (see SummarisedEvents): with `count`, that many more alike came `since` then.
   */
  'boot.script': { client: string; status: number; menu?: string; nbd?: string } & Repeated;
  'boot.kernel': { client: string; status: number; bytes: number } & Repeated;
  'boot.initrd': { client: string; status: number; bytes: number } & Repeated;
  /** `profile`: the profile it takes unset fields from; `persistent` is its effective value. */
  'machine.created': { mac: string; name: string; persistent: boolean; profile?: string } & ActedBy;
  /** `changed`: the fields that changed; `stateDiscarded`: its persistent state went with the change. */
  'machine.updated': { mac: string; name: string; changed: string[]; stateDiscarded: boolean } & ActedBy;
  'machine.deleted': { mac: string; name: string } & ActedBy;
  /** Its persistent state was discarded: the next boot starts from the image. */
  'machine.reset': { mac: string; name: string } & ActedBy;
  /** A MAC no machine has asked for a boot script (recorded the first time only); with `count`, that many more new MACs came from `client` `since` then. */
  'machine.discovered': { mac: string; client: string } & Repeated;
  'profile.created': { name: string } & ActedBy;
  /**
   * `changed`: the profile's fields that changed; `machines`: how many of its machines take a changed
   * field from it (what their next boot gets); `cleared`: the fields its machines' own values were
   * cleared of, so the profile's apply; `stateDiscarded`: machines whose state went with the change.
   */
  'profile.updated': { name: string; changed: string[]; machines: number; cleared?: string[]; stateDiscarded: string[] } & ActedBy;
  'profile.removed': { name: string } & ActedBy;
  /** Discovered MACs became machines of the profile, named in the order they were discovered. */
  'profile.adopted': { name: string; machines: Array<{ mac: string; name: string }> } & ActedBy;
  /** The machine's boot reached `stage`; `detail`: a failure's reason, or the timing lines of `root`. */
  'machine.stage': { mac: string; name: string; stage: MachineStage; client: string; detail?: string };
  /** How nbdmux reaches its BMC was set (`passwordChanged`: a new password came with it; never the password itself). */
  'machine.bmc-set': { mac: string; name: string; address: string; port: number; user: string | null; passwordChanged: boolean } & ActedBy;
  'machine.bmc-removed': { mac: string; name: string } & ActedBy;
  /** The BMC user and password its machines share were set (`passwordChanged`: a new password came with it; never the password). */
  'profile.bmc-set': { name: string; user: string; passwordChanged: boolean } & ActedBy;
  'profile.bmc-removed': { name: string } & ActedBy;
  /** A power action sent to its BMC: `outcome` done, or why the BMC did not do it (`error`: what it answered); `state` after `status`. */
  'machine.power': {
    mac: string;
    name: string;
    action: PowerAction;
    outcome: 'done' | PowerFailure;
    state?: PowerState;
    error?: string;
  } & ActedBy;
}

/** What nbdmux asks of a BMC: `pxe` is "boot from the network next" (chassis bootdev pxe). */
export const powerActions = ['status', 'on', 'off', 'cycle', 'reset', 'pxe'] as const;
export type PowerAction = (typeof powerActions)[number];
export type PowerState = 'on' | 'off';
/**
 * Why a BMC did not do what was asked: it did not answer in time or could not be reached
 * (`unreachable`), it refused the user name or password (`credentials`), it answered with a
 * refusal (`refused`: unsupported, not now, not allowed), or ipmitool could not run (`no-ipmitool`).
 */
export type PowerFailure = 'unreachable' | 'credentials' | 'refused' | 'no-ipmitool';

/**
 * Where a machine's boot is, in the order a good boot passes them (failed: at any point;
 * reconnected: its root's connection had closed and a new one of the same boot attached since).
 */
export const machineStages = ['script', 'kernel', 'initrd', 'attached', 'root', 'up', 'reconnected', 'off', 'failed'] as const;
export type MachineStage = (typeof machineStages)[number];

export type EventType = keyof EventDetails;

type SessionActor = `session:${string}`;

/** Who made a change: no password set (`open`), the admin password as a bearer, or a logged-in session. */
export interface Actor {
  actor: 'open' | 'bearer' | SessionActor;
  /** The address the request came from. */
  client: string;
}

/** What a summary of repeats adds to the first occurrence's details. */
export interface Repeated {
  count?: number;
  since?: string;
}

/** Optional because events recorded before nbdmux named actors have none: readers must not count on it. */
type ActedBy = Partial<Actor>;
