import { sql } from 'drizzle-orm';
import { integer, sqliteTable, text, uniqueIndex, index } from 'drizzle-orm/sqlite-core';
import { machineStages, type EventDetails, type EventType, type MachineStage } from '../model/event-map.js';
import { defaultCmdline } from '../rules/cmdline.js';
import type { BootInspection } from '../inspect/result.js';

/**
 * An export is never deleted, only marked removed: its live connections keep pointing at it
 * while they drain, and its history stays readable. A name is unique among exports that are
 * not removed, so an image can be replaced under the same name while old machines drain.
 * What it serves is its current version (exportVersionsTable).
 */
export const exportsTable = sqliteTable(
  'exports',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    name: text('name').notNull(),
    /** The version new connections get; null while the first one is still being imported. */
    currentVersionId: integer('current_version_id'),
    readonly: integer('readonly', { mode: 'boolean' }).notNull(),
    /** Each connection writes to its own diff file (nbd-server copyonwrite); the image is never written. */
    cow: integer('cow', { mode: 'boolean' }).notNull().default(false),
    /** Client addresses (CIDR) that may use this export; empty: every client the NBD port admits. */
    allow: text('allow', { mode: 'json' })
      .$type<string[]>()
      .notNull()
      .default(sql`'[]'`),
    /** Kernel arguments a booting machine gets after nbdmux's own (initrd=, nbdroot=); see exports/inputs.ts. */
    cmdline: text('cmdline').notNull().default(defaultCmdline),
    createdAt: text('created_at').notNull(),
    removedAt: text('removed_at'),
  },
  (t) => [
    uniqueIndex('exports_active_name')
      .on(t.name)
      .where(sql`removed_at IS NULL`),
  ],
);

/**
 * The images an export has served or will serve, numbered from 1 per export. A version is never
 * deleted: a store file it owned is (state `deleted`), once nothing can need it any more.
 */
export const exportVersionsTable = sqliteTable(
  'export_versions',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    exportId: integer('export_id')
      .notNull()
      .references(() => exportsTable.id),
    version: integer('version').notNull(),
    /** The real path judged; null until an import has put its file in place. */
    file: text('file'),
    /**
     * `dev:ino:birthtime` of the file judged: the one file this version may ever serve. Null for
     * versions registered before pinning existed, until the next start pins them.
     */
    fileIdentity: text('file_identity'),
    /** Of the downloaded bytes, for an import; null for a file registered by path. */
    sha256: text('sha256'),
    size: integer('size'),
    /** The file is one nbdmux imported into its image store, so it is nbdmux's to delete. */
    stored: integer('stored', { mode: 'boolean' }).notNull().default(false),
    state: text('state', { enum: ['importing', 'ready', 'failed', 'deleted'] }).notNull(),
    /** Where an import came from. */
    url: text('url'),
    /** Why an import failed. */
    error: text('error'),
    /** What the last inspection found inside the image (src/inspect); null: never inspected. */
    bootInspection: text('boot', { mode: 'json' }).$type<BootInspection>(),
    /** The file state and kit that inspection saw (src/boot/boot-files.ts): another one inspects again. */
    bootIdentity: text('boot_identity'),
    createdAt: text('created_at').notNull(),
  },
  (t) => [uniqueIndex('export_versions_number').on(t.exportId, t.version)],
);

/** One row per accepted TCP connection on the NBD port, from accept to close. */
export const connectionsTable = sqliteTable(
  'connections',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    exportId: integer('export_id').references(() => exportsTable.id),
    /** The version the client attached: it keeps that image until it ends. */
    versionId: integer('version_id').references(() => exportVersionsTable.id),
    clientAddress: text('client_address').notNull(),
    clientPort: integer('client_port').notNull(),
    pid: integer('pid'),
    /** /proc/PID/stat start time, so a restarted daemon never mistakes a reused pid for ours. */
    pidStartTicks: integer('pid_start_ticks'),
    openedAt: text('opened_at').notNull(),
    negotiatedAt: text('negotiated_at'),
    closedAt: text('closed_at'),
    outcome: text('outcome', { enum: ['closed', 'not-served', 'failed', 'killed'] }),
    exitCode: integer('exit_code'),
    signal: text('signal'),
    bytesSent: integer('bytes_sent').notNull().default(0),
    /** Size of a copy-on-write connection's diff file when last seen; null when it has none. */
    cowDiffBytes: integer('cow_diff_bytes'),
    error: text('error'),
    /** Set when it serves a machine's persistent state (exportId is then null); kept after the machine is deleted. */
    machineId: integer('machine_id'),
  },
  // Both the live connections (closed_at NULL) and those retention prunes (oldest closed_at) are a range of it.
  (t) => [index('connections_open').on(t.closedAt)],
);

export const eventsTable = sqliteTable(
  'events',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    at: text('at').notNull(),
    type: text('type').$type<EventType>().notNull(),
    exportName: text('export_name'),
    details: text('details', { mode: 'json' }).$type<EventDetails[EventType]>().notNull(),
  },
  // Retention finds the newest event older than --retain-days with one seek, whatever the table's size.
  (t) => [index('events_at').on(t.at)],
);

/**
 * Sessions logged out before they expire: a session cookie is stateless, so only this list stops
 * a copied cookie, across restarts too. A row is useless once its session has expired.
 */
export const revokedSessionsTable = sqliteTable('revoked_sessions', {
  id: text('id').primaryKey(),
  /** Milliseconds since the epoch, as in the cookie. */
  expiresAt: integer('expires_at').notNull(),
});

/**
 * What a machine may set itself or take from its profile, the same columns in both tables: null is
 * unset (the machine takes its profile's, the profile nbdmux's default; see src/profiles/fields.ts).
 * A new shared field is a column here and an entry in that file's table.
 */
function sharedColumns() {
  return {
    /** The export it boots; a removed export leaves the id here, shown as none with the reason. */
    exportId: integer('export_id').references(() => exportsTable.id),
    /** Kernel arguments after its export's. */
    cmdline: text('cmdline'),
    persistent: integer('persistent', { mode: 'boolean' }),
    /** Bytes of its state filesystem, used while `persistent`. */
    stateSize: integer('state_size'),
    /**
     * cloud-init's NoCloud documents (src/cloud-init): may hold secrets, so no list view returns
     * them (the database is 0600 like the data dir). A machine's user-data is merged with its
     * profile's, the other two replace it.
     */
    userData: text('user_data'),
    networkConfig: text('network_config'),
    vendorData: text('vendor_data'),
  };
}

/** What a group of machines shares; each of them may set any field itself, which wins. */
export const profilesTable = sqliteTable('profiles', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  name: text('name').notNull().unique(),
  ...sharedColumns(),
  createdAt: text('created_at').notNull(),
});

/**
 * The lab's machines, by the MAC of their boot NIC: what each boots, its identity, and where its
 * current boot is. A machine is deleted for good (its state file too); its history stays in events.
 */
export const machinesTable = sqliteTable('machines', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  /** Lower case, colon-separated: the one spelling (see machines/inputs.ts). */
  mac: text('mac').notNull().unique(),
  name: text('name').notNull().unique(),
  /** The profile whose fields it takes where it sets none itself; a profile in use is never removed. */
  profileId: integer('profile_id').references(() => profilesTable.id),
  ...sharedColumns(),
  /** `systemd.machine_id`: 32 hex digits, made once when the machine is created. */
  machineId: text('machine_id').notNull(),
  createdAt: text('created_at').notNull(),
  /** Where the current (or last) boot is, and when it got there. */
  stage: text('stage', { enum: machineStages }),
  stageAt: text('stage_at'),
  /** A `failed` stage's reason, or the timing lines `root` came with. */
  stageDetail: text('stage_detail'),
  /** When each stage of the current boot was reached. */
  timeline: text('timeline', { mode: 'json' })
    .$type<Partial<Record<MachineStage, string>>>()
    .notNull()
    .default(sql`'{}'`),
  /** The address that fetched its script last: its boot's connections and reports must come from there. */
  address: text('address'),
  lastSeenAt: text('last_seen_at'),
  /** The NBD connection of its root in the current boot. */
  rootConnectionId: integer('root_connection_id'),
  /**
   * The version of its export its current boot's script was written for: its address is served
   * that version, on a reconnect too, while the boot lasts, even once the export has moved on.
   */
  bootedVersionId: integer('booted_version_id').references(() => exportVersionsTable.id),
});

/** MACs that asked for a script and are not machines (yet): one row each, however often they ask. */
export const discoveredMachinesTable = sqliteTable('discovered_machines', {
  mac: text('mac').primaryKey(),
  address: text('address').notNull(),
  firstSeenAt: text('first_seen_at').notNull(),
  lastSeenAt: text('last_seen_at').notNull(),
  requests: integer('requests').notNull().default(1),
});

/**
 * How nbdmux reaches a machine's BMC over IPMI (src/power): one row per machine, gone with it.
 * The password is write-only: no view returns it (the database file is 0600 like the data dir).
 */
export const machineBmcsTable = sqliteTable('machine_bmcs', {
  machineId: integer('machine_id')
    .primaryKey()
    .references(() => machinesTable.id, { onDelete: 'cascade' }),
  /** A host name or an IPv4 or IPv6 literal (see power/inputs.ts). */
  address: text('address').notNull(),
  port: integer('port').notNull(),
  /** Null: its profile's (profile_bmcs), field by field. */
  user: text('user'),
  password: text('password'),
  /** The RMCP+ cipher suite `ipmitool -C` asks for. */
  cipherSuite: integer('cipher_suite').notNull(),
  updatedAt: text('updated_at').notNull(),
});

/**
 * The BMC credentials a profile's machines share (src/power): each machine's own address, and its
 * own user or password where it sets one. Write-only password, as a machine's.
 */
export const profileBmcsTable = sqliteTable('profile_bmcs', {
  profileId: integer('profile_id')
    .primaryKey()
    .references(() => profilesTable.id, { onDelete: 'cascade' }),
  user: text('user').notNull(),
  password: text('password').notNull(),
  updatedAt: text('updated_at').notNull(),
});

export type ExportRow = typeof exportsTable.$inferSelect;
export type VersionRow = typeof exportVersionsTable.$inferSelect;
export type ConnectionRow = typeof connectionsTable.$inferSelect;
export type MachineRow = typeof machinesTable.$inferSelect;
export type ProfileRow = typeof profilesTable.$inferSelect;
export type DiscoveredMachineRow = typeof discoveredMachinesTable.$inferSelect;
export type MachineBmcRow = typeof machineBmcsTable.$inferSelect;
export type ProfileBmcRow = typeof profileBmcsTable.$inferSelect;
/** An event of one type, its details typed by it (drizzle types each column alone). */
export type EventOf<T extends EventType> = Omit<typeof eventsTable.$inferSelect, 'type' | 'details'> & {
  type: T;
  details: EventDetails[T];
};
export type EventRow = { [T in EventType]: EventOf<T> }[EventType];
