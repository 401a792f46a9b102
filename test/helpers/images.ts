import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { DebianImage } from './qemu.js';

/** A file tree to build an image from: text or bytes, an executable, a symlink, or a sparse file of a size. */
export type TreeEntry = string | Buffer | { executable: string | Buffer } | { symlink: string } | { sparseBytes: number };

export function writeTree(root: string, entries: Record<string, TreeEntry>): string {
  for (const [name, entry] of Object.entries(entries)) {
    const file = path.join(root, name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    if (typeof entry === 'string' || Buffer.isBuffer(entry)) fs.writeFileSync(file, entry);
    else if ('executable' in entry) fs.writeFileSync(file, entry.executable, { mode: 0o755 });
    else if ('symlink' in entry) fs.symlinkSync(entry.symlink, file);
    else {
      fs.writeFileSync(file, '');
      fs.truncateSync(file, entry.sparseBytes);
    }
  }
  return root;
}

/** An ext4 filesystem image holding `tree` (mkfs.ext4 -d: no mount, no loop device); `args` such as -U UUID, -L LABEL. */
export function makeExt4(file: string, tree: string, sizeMiB: number, args: string[] = []): string {
  execFileSync('mkfs.ext4', ['-q', '-F', '-E', 'root_owner=0:0', ...args, '-d', tree, file, `${sizeMiB}M`], { stdio: 'pipe' });
  return file;
}

export function makeVfat(file: string, sizeMiB: number): string {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeMiB * 1024 * 1024);
  execFileSync('mkfs.vfat', [file], { stdio: 'pipe' });
  return file;
}

export interface DiskPart {
  /** A filesystem image to copy in, or just a size for an empty partition. */
  image?: string;
  sizeMiB: number;
  /** sgdisk type code (ef00 EFI system, 8300 Linux), or an MBR type in hex for sfdisk. */
  type: string;
}

export interface Disk {
  file: string;
  /** Byte offset of each partition, in order. */
  offsets: number[];
}

/** A GPT disk: partitions from 1 MiB on, in order, each filled from its image. */
export function makeGptDisk(file: string, parts: DiskPart[]): Disk {
  const offsets = layOut(file, parts);
  const args = parts.flatMap((part, i) => ['-n', `${i + 1}:${offsets[i]! / 512}:+${part.sizeMiB}M`, '-t', `${i + 1}:${part.type}`]);
  execFileSync('sgdisk', args.concat(file), { stdio: 'pipe' });
  return fill(file, parts, offsets);
}

/** An MBR (dos) disk, laid out as makeGptDisk does. */
export function makeMbrDisk(file: string, parts: DiskPart[]): Disk {
  const offsets = layOut(file, parts);
  const script = [
    'label: dos',
    ...parts.map((part, i) => `start=${offsets[i]! / 512}, size=${part.sizeMiB * 2048}, type=${part.type}`),
  ].join('\n');
  execFileSync('sfdisk', ['-q', file], { input: script, stdio: ['pipe', 'pipe', 'pipe'] });
  return fill(file, parts, offsets);
}

function layOut(file: string, parts: DiskPart[]): number[] {
  const offsets: number[] = [];
  let at = 1024 * 1024;
  for (const part of parts) {
    offsets.push(at);
    at += part.sizeMiB * 1024 * 1024;
  }
  fs.writeFileSync(file, '');
  // Room for the backup GPT at the end.
  fs.truncateSync(file, at + 1024 * 1024);
  return offsets;
}

function fill(file: string, parts: DiskPart[], offsets: number[]): Disk {
  parts.forEach((part, i) => {
    if (part.image)
      execFileSync('dd', [
        `if=${part.image}`,
        `of=${file}`,
        'bs=1M',
        `seek=${offsets[i]}`,
        'oflag=seek_bytes',
        'conv=notrunc,sparse',
        'status=none',
      ]);
  });
  return { file, offsets };
}

/**
 * A Debian 12 root tree with only what booting reads: /boot's kernel, os-release, and from
 * /lib/modules the modules ramboot loads (and their dependencies) with modules.dep. Copied out of
 * the real Debian test image (ramboot/cached-debian-image, built by mmdebstrap) with debugfs, as
 * the image has them, merged /usr symlinks included.
 */
export function debianBootTree(debian: DebianImage, tree: string): { tree: string; kernelVersion: string } {
  const { kernelVersion } = debian;
  const modules = `/usr/lib/modules/${kernelVersion}`;
  // The kit's modules and what they need in Debian 12's kernel, nothing else: a small image.
  const moduleDirs = [
    'drivers/virtio',
    'drivers/block/nbd.ko',
    'drivers/net/virtio_net.ko',
    'drivers/net/net_failover.ko',
    'drivers/net/ethernet/intel/e1000',
    'drivers/net/ethernet/intel/e1000e',
    'drivers/net/ethernet/intel/igb',
    'drivers/dca',
    'drivers/i2c/algos',
    'net/core/failover.ko',
    'fs/ext4',
    'fs/jbd2',
    'fs/overlayfs',
    'fs/mbcache.ko',
    'lib/crc16.ko',
    'crypto/crc32c_generic.ko',
    'fs/xfs',
    'fs/btrfs',
    'drivers/md/dm-mod.ko',
    'lib/libcrc32c.ko',
    'lib/zstd',
    'lib/raid6',
    'crypto/xor.ko',
  ];
  const members = [
    `/boot/vmlinuz-${kernelVersion}`,
    '/etc/os-release',
    '/usr/lib/os-release',
    '/lib',
    '/bin',
    '/sbin',
    `${modules}/modules.dep`,
    `${modules}/modules.builtin`,
    ...moduleDirs.map((dir) => `${modules}/kernel/${dir}`),
  ];
  for (const member of members) fs.mkdirSync(path.join(tree, path.dirname(member)), { recursive: true });
  const commands = members.map((member) => `rdump ${member} ${path.join(tree, path.dirname(member))}`).join('\n');
  execFileSync('debugfs', ['-f', '-', `${debian.file}?offset=${linuxPartitionOffset(debian.file)}`], {
    input: commands,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  if (!fs.existsSync(path.join(tree, 'boot', `vmlinuz-${kernelVersion}`)))
    throw new Error(`${debian.file} gave no /boot/vmlinuz-${kernelVersion}`);
  return { tree, kernelVersion };
}

/** Byte offset of a GPT disk's Linux filesystem partition (sfdisk reads the file, no privileges). */
export function linuxPartitionOffset(disk: string): number {
  const table = JSON.parse(execFileSync('sfdisk', ['-J', disk]).toString()) as {
    partitiontable: { partitions: { start: number; type: string }[] };
  };
  const root = table.partitiontable.partitions.find((part) => part.type === '0FC63DAF-8483-4772-8E79-3D69D8477DE4');
  if (!root) throw new Error(`${disk} has no Linux filesystem partition`);
  return root.start * 512;
}

/** A GPT disk as the Debian image: an EFI system partition first, then the ext4 root from debianBootTree. */
export function makeDebianDisk(
  debian: DebianImage,
  dir: string,
  extra: Record<string, TreeEntry> = {},
): Disk & { tree: string; kernelVersion: string } {
  const { tree, kernelVersion } = debianBootTree(debian, path.join(dir, 'debian.tree'));
  writeTree(tree, extra);
  const root = makeExt4(path.join(dir, 'debian.ext4'), tree, 160);
  const esp = makeVfat(path.join(dir, 'debian-esp.vfat'), 8);
  const disk = makeGptDisk(path.join(dir, 'debian.img'), [
    { image: esp, sizeMiB: 8, type: 'ef00' },
    { image: root, sizeMiB: 160, type: '8300' },
  ]);
  return { ...disk, tree, kernelVersion };
}

/**
 * An xfs filesystem image holding `tree`, built without a mount from a protofile (mkfs.xfs -p;
 * bookworm has no xfs_protofile): directories, regular files and symlinks, owned by root.
 * xfsprogs 6.1 refuses filesystems under 300 MiB; the file is sparse.
 */
export function makeXfs(file: string, tree: string, sizeMiB = 300, args: string[] = []): string {
  const lines = ['nbdmux-test', '0 0', 'd--755 0 0'];
  const walk = (dir: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const full = path.join(dir, name);
      const stat = fs.lstatSync(full);
      const mode = (stat.mode & 0o777).toString(8).padStart(3, '0');
      if (/\s/.test(name)) throw new Error(`a protofile cannot name ${JSON.stringify(name)}`);
      if (stat.isSymbolicLink()) lines.push(`${name} l--777 0 0 ${fs.readlinkSync(full)}`);
      else if (stat.isDirectory()) {
        lines.push(`${name} d--${mode} 0 0`);
        walk(full);
        lines.push('$');
      } else lines.push(`${name} ---${mode} 0 0 ${full}`);
    }
  };
  walk(tree);
  lines.push('$');
  const proto = `${file}.proto`;
  fs.writeFileSync(proto, `${lines.join('\n')}\n`);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeMiB * 1024 * 1024);
  execFileSync('mkfs.xfs', ['-q', '-f', ...args, '-p', proto, file], { stdio: 'pipe' });
  fs.rmSync(proto);
  return file;
}
