CREATE TABLE `machine_bmcs` (
	`machine_id` integer PRIMARY KEY NOT NULL,
	`address` text NOT NULL,
	`port` integer NOT NULL,
	`user` text NOT NULL,
	`password` text NOT NULL,
	`cipher_suite` integer NOT NULL,
	`updated_at` text NOT NULL,
	FOREIGN KEY (`machine_id`) REFERENCES `machines`(`id`) ON UPDATE no action ON DELETE cascade
);
