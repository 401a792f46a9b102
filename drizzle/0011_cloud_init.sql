ALTER TABLE `machines` ADD `user_data` text;--> statement-breakpoint
ALTER TABLE `machines` ADD `network_config` text;--> statement-breakpoint
ALTER TABLE `machines` ADD `vendor_data` text;--> statement-breakpoint
ALTER TABLE `profiles` ADD `user_data` text;--> statement-breakpoint
ALTER TABLE `profiles` ADD `network_config` text;--> statement-breakpoint
ALTER TABLE `profiles` ADD `vendor_data` text;