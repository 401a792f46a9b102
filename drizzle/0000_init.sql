CREATE TABLE `connections` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`export_id` integer,
	`client_address` text NOT NULL,
	`client_port` integer NOT NULL,
	`pid` integer,
	`pid_start_ticks` integer,
	`opened_at` text NOT NULL,
	`negotiated_at` text,
	`closed_at` text,
	`outcome` text,
	`exit_code` integer,
	`signal` text,
	`bytes_sent` integer DEFAULT 0 NOT NULL,
	`error` text,
	FOREIGN KEY (`export_id`) REFERENCES `exports`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `connections_open` ON `connections` (`closed_at`);--> statement-breakpoint
CREATE TABLE `events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` text NOT NULL,
	`type` text NOT NULL,
	`export_name` text,
	`details` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `exports` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`name` text NOT NULL,
	`file` text NOT NULL,
	`readonly` integer NOT NULL,
	`size` integer NOT NULL,
	`created_at` text NOT NULL,
	`removed_at` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `exports_active_name` ON `exports` (`name`) WHERE removed_at IS NULL;