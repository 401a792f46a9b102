CREATE TABLE `export_versions` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`export_id` integer NOT NULL,
	`version` integer NOT NULL,
	`file` text,
	`file_identity` text,
	`sha256` text,
	`size` integer,
	`stored` integer DEFAULT false NOT NULL,
	`state` text NOT NULL,
	`url` text,
	`error` text,
	`created_at` text NOT NULL,
	FOREIGN KEY (`export_id`) REFERENCES `exports`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `export_versions_number` ON `export_versions` (`export_id`,`version`);--> statement-breakpoint
ALTER TABLE `connections` ADD `version_id` integer REFERENCES export_versions(id);--> statement-breakpoint
ALTER TABLE `exports` ADD `current_version_id` integer;--> statement-breakpoint
-- Every export registered so far becomes version 1 of itself, current, with its file and pin.
INSERT INTO `export_versions` (`export_id`, `version`, `file`, `file_identity`, `size`, `stored`, `state`, `created_at`)
  SELECT `id`, 1, `file`, `file_identity`, `size`, 0, 'ready', `created_at` FROM `exports`;--> statement-breakpoint
UPDATE `exports` SET `current_version_id` = (SELECT `v`.`id` FROM `export_versions` `v` WHERE `v`.`export_id` = `exports`.`id`);--> statement-breakpoint
UPDATE `connections` SET `version_id` = (SELECT `current_version_id` FROM `exports` WHERE `exports`.`id` = `connections`.`export_id`) WHERE `export_id` IS NOT NULL;--> statement-breakpoint
ALTER TABLE `exports` DROP COLUMN `file`;--> statement-breakpoint
ALTER TABLE `exports` DROP COLUMN `size`;--> statement-breakpoint
ALTER TABLE `exports` DROP COLUMN `file_identity`;