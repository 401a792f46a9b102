import { sql } from 'drizzle-orm';
import { integer, sqliteTable, text, uniqueIndex, index } from 'drizzle-orm/sqlite-core';
import type { EventDetails, EventType } from '../events/event-map.js';
import { defaultCmdline } from '../boot/ipxe.js';
import type { BootInspection } from '../boot/inspect/result.js';

/**
 * An export is never deleted, only marked removed: its live connections keep pointing at it
 * while they drain, and its history stays readable. A name is unique among exports that are
 * not removed, so an image can be replaced under the same name while old machines drain.
 */
export const exportsTable = sqliteTable(
  'exports',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    name: text('name').notNull(),
    file: text('file').notNull(),
    readonly: integer('readonly', { mode: 'boolean' }).notNull(),
    /** Each connection writes to its own diff file (nbd-server copyonwrite); the image is never written. */
    cow: integer('cow', { mode: 'boolean' }).notNull().default(false),
    /** Client addresses (CIDR) that may use this export; empty: every client the NBD port admits. */
    allow: text('allow', { mode: 'json' }).$type<string[]>().notNull().default(sql`'[]'`),
    size: integer('size').notNull(),
    /** Kernel arguments a booting machine gets after nbdmux's own (initrd=, nbdroot=); see exports/inputs.ts. */
    cmdline: text('cmdline').notNull().default(defaultCmdline),
    /**
     * `dev:ino:birthtime` of the file judged at registration: the one file this export may ever
     * serve. Null for exports registered before pinning existed, until the next start pins them.
     */
    fileIdentity: text('file_identity'),
    /** What the last inspection found inside the image (src/boot/inspect); null: never inspected. */
    bootInspection: text('boot', { mode: 'json' }).$type<BootInspection>(),
    /** The image version and kit that inspection saw (src/boot/boot-files.ts): another one inspects again. */
    bootIdentity: text('boot_identity'),
    createdAt: text('created_at').notNull(),
    removedAt: text('removed_at'),
  },
  (t) => [uniqueIndex('exports_active_name').on(t.name).where(sql`removed_at IS NULL`)],
);

/** One row per accepted TCP connection on the NBD port, from accept to close. */
export const connectionsTable = sqliteTable(
  'connections',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    exportId: integer('export_id').references(() => exportsTable.id),
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
  (t) => [index('connections_open').on(t.closedAt)],
);

export const eventsTable = sqliteTable('events', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  at: text('at').notNull(),
  type: text('type').$type<EventType>().notNull(),
  exportName: text('export_name'),
  details: text('details', { mode: 'json' }).$type<EventDetails[EventType]>().notNull(),
});

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
export type ConnectionRow = typeof connectionsTable.$inferSelect;
/** An event of one type, its details typed by it (drizzle types each column alone). */
export type EventOf<T extends EventType> = Omit<typeof eventsTable.$inferSelect, 'type' | 'details'> & { type: T; details: EventDetails[T] };
export type EventRow = { [T in EventType]: EventOf<T> }[EventType];
