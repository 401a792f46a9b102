import fs from 'node:fs';
import path from 'node:path';
import type { ExportRow } from '../db/schema.js';

/** What the boot side needs of an export. */
export type BootExport = Pick<ExportRow, 'id' | 'name' | 'file'>;

/** Whether a machine can boot an export, and with what; shown as `boot` in GET /exports. */
export interface BootInfo {
  ready: boolean;
  /** The image's OS (its os-release PRETTY_NAME), when known. */
  os: string | null;
  /** The kernel version a machine gets. */
  kernel: string | null;
  /** The root partition's number, or null for a whole-disk filesystem or when not known. */
  partition: number | null;
  fstype: string | null;
  /** Why it cannot boot, or which fallback it uses; null when it boots exactly what the image holds. */
  reason: string | null;
}

/** A file to send: its size and ETag describe it as it was when judged. */
export type BootFile = { ok: true; path: string; size: number; etag: string } | { ok: false; status: 404 | 503; reason: string };

/** The files and facts that boot an export. The kit implements it alone; the image inspector plugs in behind the same calls. */
export interface BootArtifacts {
  bootInfo(exp: BootExport): BootInfo;
  kernelFor(exp: BootExport): Promise<BootFile>;
  initrdFor(exp: BootExport): Promise<BootFile>;
}

/** What ramboot/build-kit writes into its output directory. */
const kitFiles = { kernel: 'vmlinuz', initrd: 'initrd.img', env: 'kit.env' };

/**
 * Boots every export with the ramboot kit's own kernel and initramfs (`--ramboot-kit DIR`).
 * Without a kit nothing is bootable, and each answer says how to get one.
 */
export class KitArtifacts implements BootArtifacts {
  private readonly kernelVersion: string | null;

  /** Throws when `kitDir` is not a kit: at start-up, where a typo is cheapest to see. */
  constructor(private readonly kitDir: string | undefined) {
    if (kitDir !== undefined) checkKitDir(kitDir);
    this.kernelVersion = kitDir === undefined ? null : readKitKernelVersion(kitDir);
  }

  bootInfo(_exp: BootExport): BootInfo {
    if (this.kitDir === undefined) return { ready: false, os: null, kernel: null, partition: null, fstype: null, reason: noKit };
    return {
      ready: true,
      os: null,
      kernel: this.kernelVersion,
      partition: null,
      fstype: null,
      reason: `boots the ramboot kit's kernel${this.kernelVersion === null ? '' : ` ${this.kernelVersion}`}: the image is not inspected`,
    };
  }

  kernelFor(_exp: BootExport): Promise<BootFile> {
    return this.kitFile(kitFiles.kernel);
  }

  initrdFor(_exp: BootExport): Promise<BootFile> {
    return this.kitFile(kitFiles.initrd);
  }

  private async kitFile(name: string): Promise<BootFile> {
    if (this.kitDir === undefined) return { ok: false, status: 404, reason: noKit };
    const file = path.join(this.kitDir, name);
    try {
      const stat = await fs.promises.stat(file);
      if (!stat.isFile()) return { ok: false, status: 503, reason: `${file} is not a file: rebuild the kit with ramboot/build-kit` };
      return { ok: true, path: file, size: stat.size, etag: fileEtag(stat) };
    } catch (err) {
      return { ok: false, status: 503, reason: `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)}): rebuild the kit with ramboot/build-kit or fix --ramboot-kit` };
    }
  }
}

const noKit = 'no kernel to boot: the image is not inspected and nbdmux has no ramboot kit; start nbdmux-server with --ramboot-kit DIR (a directory ramboot/build-kit wrote)';

function checkKitDir(kitDir: string): void {
  for (const name of [kitFiles.kernel, kitFiles.initrd]) {
    const file = path.join(kitDir, name);
    if (!fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
      throw new Error(`--ramboot-kit ${kitDir} holds no ${name}: give a directory ramboot/build-kit (or ramboot/cached-build) wrote`);
    }
  }
}

/** KERNEL_VERSION from kit.env, which build-kit writes as plain `KEY=value` lines. */
function readKitKernelVersion(kitDir: string): string | null {
  let env: string;
  try {
    env = fs.readFileSync(path.join(kitDir, kitFiles.env), 'utf8');
  } catch {
    return null;
  }
  const version = /^KERNEL_VERSION=([A-Za-z0-9._+-]{1,64})$/m.exec(env)?.[1];
  return version ?? null;
}

/** Changes whenever the file is replaced or rewritten: inode, size and modification time. */
export function fileEtag(stat: fs.Stats): string {
  return `"${stat.ino.toString(36)}-${stat.size.toString(36)}-${Math.trunc(stat.mtimeMs).toString(36)}"`;
}
