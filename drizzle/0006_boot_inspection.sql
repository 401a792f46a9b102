ALTER TABLE `export_versions` ADD `boot` text;--> statement-breakpoint
ALTER TABLE `export_versions` ADD `boot_identity` text;--> statement-breakpoint
ALTER TABLE `exports` ADD `cmdline` text DEFAULT 'console=tty0 console=ttyS0,115200' NOT NULL;