ALTER TABLE `connections` ADD `cow_diff_bytes` integer;--> statement-breakpoint
ALTER TABLE `exports` ADD `cow` integer DEFAULT false NOT NULL;