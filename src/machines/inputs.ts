import { z } from 'zod';
import { exportName, kernelCmdline } from '../exports/inputs.js';
import { normaliseMac } from '../rules/mac.js';
import { exportNamePattern } from '../rules/names.js';
import { cloudConfigText, networkConfigText } from '../rules/cloud-config.js';

// Every control-plane input about machines, defined once: the router validates with these, the
// boot routes parse a MAC with the same rule, and clients infer their types through the router.

const mib = 1024 * 1024;
/** ext4 with a journal needs some room; below this a machine could hardly write anything. */
export const minStateSize = 64 * mib;
export const maxStateSize = 16 * 1024 * 1024 * mib;
export const defaultStateSize = 4 * 1024 * mib;

export const macAddress = z
  .string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') })
  .transform((text, ctx) => {
    const mac = normaliseMac(text);
    if (mac === null) {
      ctx.addIssue({
        code: 'custom',
        message: 'must be a MAC address: six pairs of hex digits separated by ":" or "-", e.g. 52:54:00:12:34:56',
      });
      return z.NEVER;
    }
    // The low bit of the first octet marks a group address: no NIC boots with one.
    if (parseInt(mac.slice(0, 2), 16) & 1 || mac === '00:00:00:00:00:00') {
      ctx.addIssue({
        code: 'custom',
        message: `${mac} is a multicast or null address, which no network card has: give the boot NIC's own MAC`,
      });
      return z.NEVER;
    }
    return mac;
  });

/** A hostname label, as systemd.hostname= sets it and DNS can carry it. */
export const machineName = z
  .string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') })
  .regex(
    /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/,
    'must be a host name: 1 to 63 characters of a-z 0-9 and "-", not starting or ending with "-"',
  );

/** Bytes, as a whole number or with a binary unit: 4294967296, "4G", "4GiB", "512M". */
const stateSize = z
  .union([z.number(), z.string()], { error: 'must be a size in bytes, or a number with K, M, G or T (binary units), e.g. "4G"' })
  .transform((value, ctx) => {
    const bytes = typeof value === 'number' ? value : parseSize(value);
    if (bytes === null || !Number.isSafeInteger(bytes)) {
      ctx.addIssue({ code: 'custom', message: 'must be a whole number of bytes, or a number with K, M, G or T (binary units), e.g. "4G"' });
      return z.NEVER;
    }
    if (bytes < minStateSize || bytes > maxStateSize) {
      ctx.addIssue({ code: 'custom', message: `must be between 64M and 16T (got ${bytes} bytes)` });
      return z.NEVER;
    }
    if (bytes % 4096 !== 0) {
      ctx.addIssue({ code: 'custom', message: 'must be a multiple of 4096 bytes, the filesystem block size' });
      return z.NEVER;
    }
    return bytes;
  });

function parseSize(text: string): number | null {
  const match = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!match) return null;
  const power = ' KMGT'.indexOf(match[2]!.toUpperCase() || ' ');
  return Number(match[1]) * 1024 ** power;
}

/**
 * The fields a machine shares with its profile (src/profiles/fields.ts): each may be left unset,
 * null, so the machine takes its profile's, else the default.
 */
export const sharedInputs = {
  /** The export it boots. */
  export: exportName,
  /** Extra kernel arguments, after the export's: the export's rules (no `$`, no quotes, none of nbdmux's own). */
  cmdline: kernelCmdline,
  persistent: z.boolean({ error: 'must be true or false' }),
  stateSize,
  /** cloud-init user-data: a cloud-config (optionally a jinja template of one); a machine's is merged with its profile's. */
  userData: cloudConfigText,
  /** cloud-init network-config (v1 or v2); it must leave the NIC the root is attached through alone. */
  networkConfig: networkConfigText,
  /** cloud-init vendor-data: a cloud-config, applied before user-data. */
  vendorData: cloudConfigText,
};

/** A profile's name: the rule of export names, as it goes in a path and on a command line alike. */
export const profileName = z
  .string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') })
  .regex(exportNamePattern, {
    message: "must be 1 to 64 characters of A-Z a-z 0-9 '.' '_' '-', starting with a letter or digit",
  });

type SharedInputs = typeof sharedInputs;

/** Each shared field unset unless given (null: unset), for a new machine or profile. */
export const sharedUnsetByDefault = Object.fromEntries(
  Object.entries(sharedInputs).map(([field, schema]: [string, z.ZodType]) => [field, schema.nullable().default(null)]),
) as { [F in keyof SharedInputs]: z.ZodDefault<z.ZodNullable<SharedInputs[F]>> };

/** Each shared field changed only when given; null clears it, so the profile's (or the default) applies. */
export const sharedChanges = Object.fromEntries(
  Object.entries(sharedInputs).map(([field, schema]: [string, z.ZodType]) => [field, schema.nullable().optional()]),
) as { [F in keyof SharedInputs]: z.ZodOptional<z.ZodNullable<SharedInputs[F]>> };

export const createMachineInput = z.strictObject({
  mac: macAddress,
  name: machineName,
  profile: profileName.nullable().default(null),
  ...sharedUnsetByDefault,
});

export const updateMachineInput = z.strictObject({
  mac: macAddress,
  name: machineName.optional(),
  /** The profile it takes unset fields from; null: none. */
  profile: profileName.nullable().optional(),
  ...sharedChanges,
  /** With a new export: keep the state written over the old one (an upper layer belongs to its lower layer). */
  keepState: z.boolean({ error: 'must be true or false' }).default(false),
});

export const machineByMacInput = z.strictObject({ mac: macAddress });

export type CreateMachineInput = z.infer<typeof createMachineInput>;
export type UpdateMachineInput = z.infer<typeof updateMachineInput>;
