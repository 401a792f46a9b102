import { sql } from 'drizzle-orm';
import { integer, sqliteTable, text, uniqueIndex, index } from 'drizzle-orm/sqlite-core';
import type { EventDetails, EventType } from '../events/event-map.js';
import { defaultCmdline } from '../boot/ipxe.js';
import type { BootInspection } from '../boot/inspect/result.js';

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
    allow: text('allow', { mode: 'json' }).$type<string[]>().notNull().default(sql`'[]'`),
    /** Kernel arguments a booting machine gets after nbdmux's own (initrd=, nbdroot=); see exports/inputs.ts. */
    cmdline: text('cmdline').notNull().default(defaultCmdline),
    createdAt: text('created_at').notNull(),
    removedAt: text('removed_at'),
  },
  (t) => [uniqueIndex('exports_active_name').on(t.name).where(sql`removed_at IS NULL`)],
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
    /** What the last inspection found inside the image (src/boot/inspect); null: never inspected. */
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

export type ExportRow = typeof exportsTable.$inferSelect;
export type VersionRow = typeof exportVersionsTable.$inferSelect;
export type ConnectionRow = typeof connectionsTable.$inferSelect;
/** An event of one type, its details typed by it (drizzle types each column alone). */
export type EventOf<T extends EventType> = Omit<typeof eventsTable.$inferSelect, 'type' | 'details'> & { type: T; details: EventDetails[T] };
export type EventRow = { [T in EventType]: EventOf<T> }[EventType];
