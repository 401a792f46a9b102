import path from 'node:path';
import { z } from 'zod';
import { cmdlineProblem, defaultCmdline } from '../boot/ipxe.js';
import { parseCidr } from './allow-list.js';
import { configSafePathPattern, exportNamePattern, isReservedExportName } from './rules.js';

// Every control-plane input about exports, defined once: the router validates with these,
// and clients infer their types from them through the router.

/** A missing field and a field of the wrong type call for different fixes. */
const requiredString = { error: (issue: { input: unknown }) => (issue.input === undefined ? 'is required' : 'must be a string') };

export const exportName = z
  .string(requiredString)
  .regex(exportNamePattern, {
    message: "must be 1 to 64 characters of A-Z a-z 0-9 '.' '_' '-', starting with a letter or digit",
    abort: true,
  })
  // The pattern already refuses '__' names; 'generic' would clash with nbd-server's own section.
  .refine((name) => !isReservedExportName(name), "'generic' is reserved by nbd-server; choose another name");

export const imagePath = z
  .string(requiredString)
  .refine((file) => path.isAbsolute(file), { message: 'must be an absolute path (starting with /)', abort: true })
  .refine(
    (file) => configSafePathPattern.test(file),
    "may only contain A-Z a-z 0-9 '.' '_' '/' '+' '-': nbd-server's config would misread other characters; rename the file",
  );

/** Kernel arguments for machines booting the export through nbdmux's iPXE scripts. */
export const kernelCmdline = z
  .string(requiredString)
  .superRefine((cmdline, ctx) => {
    const problem = cmdlineProblem(cmdline);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  });

export const createExportInput = z
  .strictObject({
    name: exportName,
    file: imagePath,
    /** The image file is never written. */
    readonly: z.boolean({ error: 'must be true or false' }).default(true),
    /** Every connection gets its own private writable view; its writes vanish when it ends. */
    cow: z.boolean({ error: 'must be true or false' }).default(false),
    /** Only clients from these addresses may use the export; empty: everyone the NBD port admits. */
    allow: z
      .array(z.string(requiredString).refine((cidr) => parseCidr(cidr) !== null, 'must be an IP address or CIDR range, e.g. 10.1.0.0/16'), {
        error: 'must be a list of IP addresses or CIDR ranges',
      })
      .max(64, 'at most 64 ranges')
      .default([]),
    cmdline: kernelCmdline.default(defaultCmdline),
  })
  // A cow export keeps the image read-only by definition: readonly false would ask for the opposite.
  .refine((input) => !(input.cow && !input.readonly), {
    path: ['cow'],
    message:
      'a copy-on-write export never writes its image, so it cannot be "readonly": false; drop "readonly" (clients still get a private writable view) or drop "cow" to let clients write the image itself',
  });

export const exportByNameInput = z.strictObject({ name: exportName });

export const deleteExportInput = z.strictObject({
  name: exportName,
  /** End live connections now instead of letting them drain. */
  force: z.boolean({ error: 'must be true or false' }).default(false),
});

export type CreateExportInput = z.infer<typeof createExportInput>;
export type DeleteExportInput = z.infer<typeof deleteExportInput>;
