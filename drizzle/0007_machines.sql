CREATE TABLE `discovered_machines` (
	`mac` text PRIMARY KEY NOT NULL,
	`address` text NOT NULL,
	`first_seen_at` text NOT NULL,
	`last_seen_at` text NOT NULL,
	`requests` integer DEFAULT 1 NOT NULL
);
--> statement-breakpoint
CREATE TABLE `machines` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`mac` text NOT NULL,
	`name` text NOT NULL,
	`export_id` integer,
	`cmdline` text DEFAULT '' NOT NULL,
	`persistent` integer DEFAULT false NOT NULL,
	`state_size` integer NOT NULL,
	`machine_id` text NOT NULL,
	`created_at` text NOT NULL,
	`stage` text,
	`stage_at` text,
	`stage_detail` text,
	`timeline` text DEFAULT '{}' NOT NULL,
	`address` text,
	`last_seen_at` text,
	`root_connection_id` integer,
	FOREIGN KEY (`export_id`) REFERENCES `exports`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `machines_mac_unique` ON `machines` (`mac`);--> statement-breakpoint
CREATE UNIQUE INDEX `machines_name_unique` ON `machines` (`name`);--> statement-breakpoint
ALTER TABLE `connections` ADD `machine_id` integer;