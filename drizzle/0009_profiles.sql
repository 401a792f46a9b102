-- Existing machines keep every field they have as their own (a machine in no profile takes nothing else); the new profile_id is NULL.
CREATE TABLE `profiles` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`name` text NOT NULL,
	`export_id` integer,
	`cmdline` text,
	`persistent` integer,
	`state_size` integer,
	`created_at` text NOT NULL,
	FOREIGN KEY (`export_id`) REFERENCES `exports`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `profiles_name_unique` ON `profiles` (`name`);--> statement-breakpoint
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_machines` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`mac` text NOT NULL,
	`name` text NOT NULL,
	`profile_id` integer,
	`export_id` integer,
	`cmdline` text,
	`persistent` integer,
	`state_size` integer,
	`machine_id` text NOT NULL,
	`created_at` text NOT NULL,
	`stage` text,
	`stage_at` text,
	`stage_detail` text,
	`timeline` text DEFAULT '{}' NOT NULL,
	`address` text,
	`last_seen_at` text,
	`root_connection_id` integer,
	`booted_version_id` integer,
	FOREIGN KEY (`profile_id`) REFERENCES `profiles`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`export_id`) REFERENCES `exports`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`booted_version_id`) REFERENCES `export_versions`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
INSERT INTO `__new_machines`("id", "mac", "name", "profile_id", "export_id", "cmdline", "persistent", "state_size", "machine_id", "created_at", "stage", "stage_at", "stage_detail", "timeline", "address", "last_seen_at", "root_connection_id", "booted_version_id") SELECT "id", "mac", "name", NULL, "export_id", "cmdline", "persistent", "state_size", "machine_id", "created_at", "stage", "stage_at", "stage_detail", "timeline", "address", "last_seen_at", "root_connection_id", "booted_version_id" FROM `machines`;--> statement-breakpoint
DROP TABLE `machines`;--> statement-breakpoint
ALTER TABLE `__new_machines` RENAME TO `machines`;--> statement-breakpoint
PRAGMA foreign_keys=ON;--> statement-breakpoint
CREATE UNIQUE INDEX `machines_mac_unique` ON `machines` (`mac`);--> statement-breakpoint
CREATE UNIQUE INDEX `machines_name_unique` ON `machines` (`name`);