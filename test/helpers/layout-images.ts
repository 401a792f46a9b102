import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { makeGptDisk, type DiskPart } from './images.js';

const MiB = 1024 * 1024;

/**
 * Whether this host lets a test attach loop devices and mount btrfs: root, /dev/loop-control,
 * btrfs in the kernel. mkfs.btrfs 6.2 (Debian 12) has no --subvol nor --compress, so named
 * subvolumes and compressed extents can only be written through a mounted filesystem; LVM's
 * tools only write a PV onto a block device. Tests needing either skip, saying so, without them.
 */
export const loopDevicesUsable =
  process.getuid?.() === 0 && fs.existsSync('/dev/loop-control') && fs.readFileSync('/proc/filesystems', 'utf8').includes('btrfs');

/** A btrfs image holding `tree` in its top level, written by mkfs.btrfs --rootdir: no mount, no loop device. */
export function makeBtrfs(file: string, tree: string, sizeMiB = 160, args: string[] = []): string {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeMiB * MiB);
  execFileSync('mkfs.btrfs', ['-q', ...args, '--rootdir', tree, file], { stdio: 'pipe' });
  return file;
}

export interface SubvolumeContent {
  /** Its path from the top level ("root", "root/boot"); "" fills the top level itself. */
  path: string;
  tree: string;
  /** Written with `compress-force=` this algorithm, so its files' extents are compressed. */
  compress?: 'zstd' | 'zlib' | 'lzo';
}

/**
 * A btrfs image with subvolumes, each filled from a tree, written through a loop device mounted
 * in a scratch directory (see loopDevicesUsable), unmounted and detached before it returns.
 * `defaultSubvolume`: a path made the default (`btrfs subvolume set-default`).
 */
export function makeBtrfsWithSubvolumes(
  file: string,
  contents: SubvolumeContent[],
  options: { sizeMiB?: number; uuid?: string; defaultSubvolume?: string } = {},
): string {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, (options.sizeMiB ?? 200) * MiB);
  execFileSync('mkfs.btrfs', ['-q', ...(options.uuid ? ['-U', options.uuid] : []), file], { stdio: 'pipe' });
  const mountPoint = fs.mkdtempSync(`${file}.mnt-`);
  const loop = execFileSync('losetup', ['-f', '--show', file]).toString().trim();
  let mounted = false;
  try {
    execFileSync('mount', ['-t', 'btrfs', loop, mountPoint]);
    mounted = true;
    for (const content of contents) {
      const at = path.join(mountPoint, content.path);
      if (content.path !== '') execFileSync('btrfs', ['-q', 'subvolume', 'create', at]);
      execFileSync('mount', ['-o', `remount,${content.compress ? `compress-force=${content.compress}` : 'compress=no'}`, mountPoint]);
      execFileSync('cp', ['-a', `${content.tree}/.`, `${at}/`]);
      execFileSync('sync', ['-f', mountPoint]);
    }
    if (options.defaultSubvolume) execFileSync('btrfs', ['subvolume', 'set-default', path.join(mountPoint, options.defaultSubvolume)]);
  } finally {
    if (mounted) execFileSync('umount', [mountPoint]);
    execFileSync('losetup', ['-d', loop]);
    fs.rmdirSync(mountPoint);
  }
  return file;
}

export interface LvmVolume {
  name: string;
  sizeMiB: number;
  /** A filesystem image written into the LV's bytes. */
  image?: string;
}

export interface LvmDisk {
  file: string;
  /** Byte offset of each partition, the PV's last. */
  offsets: number[];
  vg: string;
  /** Each LV's byte offset in the disk, as LVM's own tools place it (pvs pe_start, lvs seg_pe_ranges). */
  lvOffsets: Record<string, number>;
}

/**
 * A GPT disk of `parts`, then a partition (8e00) holding an LVM2 PV with volume group `vg` and
 * linear LVs, written by LVM's own tools on a loop device over that partition with activation
 * off (this host's kernel has no device-mapper: `--driverloaded n`), so nothing is activated; the
 * LVs' filesystems are then copied into the disk at the offsets LVM reports. The loop device is
 * detached before it returns, and LVM looks at no other device (a filter naming only it).
 */
export function makeLvmDisk(file: string, parts: DiskPart[], pv: { sizeMiB: number; vg: string; volumes: LvmVolume[] }): LvmDisk {
  const disk = makeGptDisk(file, [...parts, { sizeMiB: pv.sizeMiB, type: '8e00' }]);
  const pvOffset = disk.offsets.at(-1)!;
  const loop = execFileSync('losetup', ['-f', '--show', '-o', String(pvOffset), '--sizelimit', String(pv.sizeMiB * MiB), file])
    .toString()
    .trim();
  const only = ['--config', `devices { filter = [ "a|^${loop}$|", "r|.*|" ] use_devicesfile = 0 }`];
  const lvm = (...args: string[]) =>
    execFileSync(args[0]!, [...args.slice(1), ...only], {
      env: { ...process.env, LVM_SUPPRESS_FD_WARNINGS: '1' },
      stdio: 'pipe',
    }).toString();
  const lvOffsets: Record<string, number> = {};
  try {
    lvm('pvcreate', '-y', loop);
    lvm('vgcreate', pv.vg, loop);
    for (const volume of pv.volumes)
      lvm('lvcreate', '--driverloaded', 'n', '-an', '-Zn', '-L', `${volume.sizeMiB}M`, '-n', volume.name, pv.vg);
    const peStart = Number(lvm('pvs', '--noheadings', '--units', 'b', '--nosuffix', '-o', 'pe_start', loop).trim());
    const extentBytes = Number(lvm('vgs', '--noheadings', '--units', 'b', '--nosuffix', '-o', 'vg_extent_size', pv.vg).trim());
    for (const line of lvm('lvs', '--noheadings', '-o', 'lv_name,seg_pe_ranges', pv.vg).trim().split('\n')) {
      const [name, ranges] = line.trim().split(/\s+/);
      const first = Number(/:(\d+)-/.exec(ranges!)![1]);
      lvOffsets[name!] = pvOffset + peStart + first * extentBytes;
    }
    lvm('vgchange', '--driverloaded', 'n', '-an', pv.vg);
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
  for (const volume of pv.volumes) {
    if (!volume.image) continue;
    execFileSync('dd', [
      `if=${volume.image}`,
      `of=${file}`,
      'bs=1M',
      `seek=${lvOffsets[volume.name]}`,
      'oflag=seek_bytes',
      'conv=notrunc,sparse',
      'status=none',
    ]);
  }
  return { ...disk, vg: pv.vg, lvOffsets };
}
