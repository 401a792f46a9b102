ALTER TABLE `exports` ADD `boot` text;--> statement-breakpoint
ALTER TABLE `exports` ADD `boot_identity` text;