import { z } from 'zod';

/**
 * What ramboot's init accepts in nbdroot.lv=VG/LV and nbdroot.subvol=PATH: letters, digits and
 * `+ _ . -` (and `@ /` in a path; no `.` or `..` component, nothing starting with `-`). Names
 * from an image reach an iPXE script only through these (see src/boot/ipxe.ts).
 */
export const lvNamePattern = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,127}\/[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,127}$/;
export const subvolPathPattern =
  /^(?!(?:.*\/)?\.{1,2}(?:\/|$))[A-Za-z0-9@+_.][A-Za-z0-9@+_.-]*(?:\/[A-Za-z0-9@+_.][A-Za-z0-9@+_.-]*){0,15}$/;

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
  /** Where the root (and a separate /boot) lie, for a person: "gpt/lvm:vg0/root xfs, /boot partition 2 ext4", "gpt/p2 btrfs subvol=root". */
  // Inspections stored before layouts were read have none of these three: null, as for a plain partition.
  layout: z.string().nullable().default(null),
  /** The root's logical volume, `VG/LV` (nbdroot.lv=), checked against lvNamePattern. */
  lv: z.string().regex(lvNamePattern).nullable().default(null),
  /** The root's btrfs subvolume when not the default one (nbdroot.subvol=), checked against subvolPathPattern. */
  subvol: z.string().max(255).regex(subvolPathPattern).nullable().default(null),
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
  /** The kernel's path inside that filesystem (a btrfs: from its default subvolume), symlinks resolved, and its size. */
  kernelPath: z.string().nullable(),
  kernelSize: z.number().int().nonnegative().nullable(),
  /** /lib/modules/VERSION of that kernel, symlinks resolved (/usr/lib/modules/... on a merged /usr; a btrfs: from its default subvolume). */
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
  layout: null,
  lv: null,
  subvol: null,
  reason: null,
  partitionOffset: null,
  kernelOffset: null,
  kernelPath: null,
  kernelSize: null,
  modulesDir: null,
  devicesMissing: [],
};
