import { z } from 'zod';

/** What GET /exports shows as an export's `boot`. */
export const bootSummarySchema = z.object({
  /** The image's own kernel and modules can boot it; false: the kit's kernel and initrd do. */
  ready: z.boolean(),
  /** The image's os-release name, when it has one. */
  os: z.string().nullable(),
  /** The image's kernel version chosen (newest with its /lib/modules, or the one asked for), even when not ready. */
  kernel: z.string().nullable(),
  /** The root partition's number (nbdroot.part=N); null: the whole disk, or none found. */
  partition: z.number().int().positive().nullable(),
  fstype: z.string().nullable(),
  /** Why not ready (the kit's kernel boots it instead); null when ready. */
  reason: z.string().nullable(),
});
export type BootSummary = z.infer<typeof bootSummarySchema>;

/** The summary plus what the initramfs builder and the kernel route read from the image. */
export const bootInspectionSchema = bootSummarySchema.extend({
  /** Byte offset of the root filesystem in the image. */
  partitionOffset: z.number().int().nonnegative().nullable(),
  /** Byte offset of the filesystem holding the kernel: the root's, or a separate /boot partition's. */
  kernelOffset: z.number().int().nonnegative().nullable(),
  /** The kernel's path inside that filesystem, symlinks resolved, and its size. */
  kernelPath: z.string().nullable(),
  kernelSize: z.number().int().nonnegative().nullable(),
  /** /lib/modules/VERSION of that kernel, symlinks resolved (/usr/lib/modules/... on a merged /usr). */
  modulesDir: z.string().nullable(),
  /** The kit's NIC drivers its kernel has not (a machine whose NIC needs one boots the kit's kernel); absent in inspections before it was asked. */
  devicesMissing: z.array(z.string()).default([]),
});
export type BootInspection = z.infer<typeof bootInspectionSchema>;

export function bootSummaryOf(inspection: BootInspection): BootSummary {
  return bootSummarySchema.parse(inspection);
}

/** An inspection that found nothing yet: every field null, not ready. */
export const nothingFound: BootInspection = {
  ready: false,
  os: null,
  kernel: null,
  partition: null,
  fstype: null,
  reason: null,
  partitionOffset: null,
  kernelOffset: null,
  kernelPath: null,
  kernelSize: null,
  modulesDir: null,
  devicesMissing: [],
};
