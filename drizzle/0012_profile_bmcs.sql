CREATE TABLE `profile_bmcs` (
	`profile_id` integer PRIMARY KEY NOT NULL,
	`user` text NOT NULL,
	`password` text NOT NULL,
	`updated_at` text NOT NULL,
	FOREIGN KEY (`profile_id`) REFERENCES `profiles`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_machine_bmcs` (
	`machine_id` integer PRIMARY KEY NOT NULL,
	`address` text NOT NULL,
	`port` integer NOT NULL,
	`user` text,
	`password` text,
	`cipher_suite` integer NOT NULL,
	`updated_at` text NOT NULL,
	FOREIGN KEY (`machine_id`) REFERENCES `machines`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
INSERT INTO `__new_machine_bmcs`("machine_id", "address", "port", "user", "password", "cipher_suite", "updated_at") SELECT "machine_id", "address", "port", "user", "password", "cipher_suite", "updated_at" FROM `machine_bmcs`;--> statement-breakpoint
DROP TABLE `machine_bmcs`;--> statement-breakpoint
ALTER TABLE `__new_machine_bmcs` RENAME TO `machine_bmcs`;--> statement-breakpoint
PRAGMA foreign_keys=ON;