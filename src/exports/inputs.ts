import path from 'node:path';
import { z } from 'zod';
import { configSafePathPattern, exportNamePattern, isReservedExportName } from '../supervisor/nbd-config.js';

/** Every control-plane input about exports, defined once: the router validates with these, clients infer from them. */
export const exportName = z
  .string({ error: 'must be a string' })
  .regex(exportNamePattern, {
    message: "must be 1 to 64 characters of A-Z a-z 0-9 '.' '_' '-', starting with a letter or digit",
    abort: true,
  })
  .refine((name) => !isReservedExportName(name), "'generic' and names starting with '__' are reserved; choose another name");

export const imagePath = z
  .string({ error: 'must be a string' })
  .refine((file) => path.isAbsolute(file), { message: 'must be an absolute path (starting with /)', abort: true })
  .refine(
    (file) => configSafePathPattern.test(file),
    "may only contain A-Z a-z 0-9 '.' '_' '/' '+' '-': nbd-server's config would misread other characters; rename the file",
  );

export const createExportInput = z.strictObject({
  name: exportName,
  file: imagePath,
  readonly: z.boolean({ error: 'must be true or false' }).default(true),
});

export const exportByNameInput = z.strictObject({ name: exportName });

export const deleteExportInput = z.strictObject({
  name: exportName,
  /** End live connections now instead of letting them drain. */
  force: z.boolean({ error: 'must be true or false' }).default(false),
});

export type CreateExportInput = z.infer<typeof createExportInput>;
export type DeleteExportInput = z.infer<typeof deleteExportInput>;
