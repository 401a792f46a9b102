import type fs from 'node:fs';
import type { ExportRow } from '../db/schema.js';
import type { NicId } from '../inspect/nic-drivers.js';

/** What the boot side needs of an export: it boots the export's current version. */
export type BootExport = Pick<ExportRow, 'id'>;

/** Whether a machine can boot an export, and with what; shown as `boot` in GET /exports. */
export interface BootInfo {
  /** A machine can boot it now: with the image's own kernel, or the kit's (then `reason` says why). */
  ready: boolean;
  /** The image's OS (its os-release PRETTY_NAME), when known. */
  os: string | null;
  /** The kernel version a machine gets. */
  kernel: string | null;
  /** The root partition's number (the script's nbdroot.part=N), or null for a whole-disk filesystem or when not known. */
  partition: number | null;
  fstype: string | null;
  /** Where the root and a separate /boot lie, e.g. "gpt/lvm:vg0/root xfs, /boot partition 2 ext4"; null when not known. */
  layout: string | null;
  /** The root's logical volume `VG/LV` (the script's nbdroot.lv=), or null. */
  lv: string | null;
  /** The root's btrfs subvolume when not the default (the script's nbdroot.subvol=), or null. */
  subvol: string | null;
  /** Why it cannot boot, or which fallback it uses; null when it boots exactly what the image holds. */
  reason: string | null;
}

/** A file to send: its size and ETag describe it as it was when judged. */
export type BootFile =
  /** `detail`: which kernel the machine gets and why, for its boot's stage detail. */
  { ok: true; path: string; size: number; etag: string; detail: string | null } | { ok: false; status: 404 | 503; reason: string };

/** The files and facts that boot an export (src/boot/boot-files.ts), told by the registry when exports come and go. */
export interface BootArtifacts {
  bootInfo(exp: BootExport): BootInfo;
  /**
   * The kernel and the initramfs a machine boots the export with; `nic`: the NIC it booted from,
   * when its script named it (the same for both requests, so both come from the same decision).
   */
  kernelFor(exp: BootExport, nic: NicId | null): Promise<BootFile>;
  initrdFor(exp: BootExport, nic: NicId | null): Promise<BootFile>;
  /** A version became the export's current one (created, replaced, imported, rolled back): look inside its image now, not when a machine first asks. */
  versionCurrent(exportId: number, versionId: number): void;
  /** A removed export: drop what was built for it. */
  removed(exportId: number): void;
}

/** What a BootInfo says of the layout before an inspection has found one. */
export const unknownLayout = { partition: null, fstype: null, layout: null, lv: null, subvol: null } as const;

const noKit =
  'no kernel to boot: nbdmux has no ramboot kit; start nbdmux-server with --ramboot-kit DIR (a directory ramboot/cached-build printed)';

/** Without `--ramboot-kit` nothing is bootable (the initramfs is the kit's), and each answer says how to get one. */
export const noKitArtifacts: BootArtifacts = {
  bootInfo: () => ({ ...unknownLayout, ready: false, os: null, kernel: null, reason: noKit }),
  kernelFor: () => Promise.resolve({ ok: false, status: 404, reason: noKit }),
  initrdFor: () => Promise.resolve({ ok: false, status: 404, reason: noKit }),
  versionCurrent: () => {},
  removed: () => {},
};

/** Changes whenever the file is replaced or rewritten: inode, size and modification time. */
export function fileEtag(stat: fs.Stats): string {
  return `"${stat.ino.toString(36)}-${stat.size.toString(36)}-${Math.trunc(stat.mtimeMs).toString(36)}"`;
}
