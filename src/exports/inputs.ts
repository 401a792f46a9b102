import path from 'node:path';
import { z } from 'zod';
import { cmdlineProblem, defaultCmdline } from '../rules/cmdline.js';
import { parseCidr } from '../rules/allow-list.js';
import { configSafePathPattern, exportNamePattern, isReservedExportName } from '../rules/names.js';

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

/** Where an import fetches its image: the importer says why one it cannot reach fails. */
export const importUrl = z
  .string(requiredString)
  .refine((url) => /^(https?|file):\/\//i.test(url) && URL.canParse(url), 'must be an http://, https:// or file:// URL');

/** What the publisher signs: the sha256 of the bytes as downloaded. */
const sha256Hex = z
  .string(requiredString)
  .regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hexadecimal digits (a sha256)')
  .transform((hex) => hex.toLowerCase());

/** An image comes from a file on this host or from a URL to import, never both. */
const imageSource = {
  file: imagePath.optional(),
  url: importUrl.optional(),
  /** Checked over the downloaded bytes; only with `url`. */
  sha256: sha256Hex.optional(),
};

function oneSource(
  input: { file?: string | undefined; url?: string | undefined; sha256?: string | undefined },
  ctx: z.RefinementCtx,
): void {
  if ((input.file === undefined) === (input.url === undefined)) {
    ctx.addIssue({
      code: 'custom',
      path: ['file'],
      message: 'give either "file" (an image on this host) or "url" (an image to import), exactly one',
    });
  } else if (input.sha256 !== undefined && input.url === undefined) {
    ctx.addIssue({ code: 'custom', path: ['sha256'], message: 'is checked over downloaded bytes: give it with "url", or drop it' });
  }
}

/** The one source an input names, once `oneSource` has accepted it. */
export function sourceOf(input: {
  file?: string | undefined;
  url?: string | undefined;
  sha256?: string | undefined;
}): { file: string } | { url: string; sha256: string | undefined } {
  return input.url !== undefined ? { url: input.url, sha256: input.sha256 } : { file: input.file! };
}

/** Kernel arguments for machines booting the export through nbdmux's iPXE scripts. */
export const kernelCmdline = z.string(requiredString).superRefine((cmdline, ctx) => {
  const problem = cmdlineProblem(cmdline);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
});

export const createExportInput = z
  .strictObject({
    name: exportName,
    ...imageSource,
    /** The image file is never written. */
    readonly: z.boolean({ error: 'must be true or false' }).default(true),
    /** Every connection gets its own private writable view; its writes vanish when it ends. */
    cow: z.boolean({ error: 'must be true or false' }).default(false),
    /** Only clients from these addresses may use the export; empty: everyone the NBD port admits. */
    allow: z
      .array(
        z.string(requiredString).refine((cidr) => parseCidr(cidr) !== null, 'must be an IP address or CIDR range, e.g. 10.1.0.0/16'),
        {
          error: 'must be a list of IP addresses or CIDR ranges',
        },
      )
      .max(64, 'at most 64 ranges')
      .default([]),
    cmdline: kernelCmdline.default(defaultCmdline),
  })
  // A cow export keeps the image read-only by definition: readonly false would ask for the opposite.
  .refine((input) => !(input.cow && !input.readonly), {
    path: ['cow'],
    message:
      'a copy-on-write export never writes its image, so it cannot be "readonly": false; drop "readonly" (clients still get a private writable view) or drop "cow" to let clients write the image itself',
  })
  .superRefine(oneSource);

export const exportByNameInput = z.strictObject({ name: exportName });

export const deleteExportInput = z.strictObject({
  name: exportName,
  /** End live connections now instead of letting them drain. */
  force: z.boolean({ error: 'must be true or false' }).default(false),
});

/** A new version of an export: the image it serves next, from a file or imported. */
export const updateExportInput = z.strictObject({ name: exportName, ...imageSource }).superRefine(oneSource);

export const rollbackInput = z.strictObject({
  name: exportName,
  /** The version to make current again; absent: the newest ready one below the current. */
  version: z.number({ error: 'must be a version number' }).int('must be a whole number').positive('must be 1 or more').optional(),
});

export type CreateExportInput = z.infer<typeof createExportInput>;
export type UpdateExportInput = z.infer<typeof updateExportInput>;
export type RollbackInput = z.infer<typeof rollbackInput>;
export type DeleteExportInput = z.infer<typeof deleteExportInput>;
