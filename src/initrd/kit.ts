import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import { moduleKey } from '../inspect/modules-dep.js';
import { unpackCpio } from './cpio.js';

/** A ramboot kit, as `ramboot/cached-build` prints its directory. */
export interface Kit {
  /** Its content key (the directory's name): part of every per-image build's cache key. */
  id: string;
  kernelVersion: string;
  vmlinuz: string;
  initrd: string;
  /** What its init loads, in order, with parameters (`/lib/modules/load-order`). */
  loadOrder: { name: string; params: string }[];
  /**
   * The modules it wants for themselves, not only as another's dependency (virtio_pci, nbd,
   * ext4, ...): an image's kernel must have these; their dependencies come from its own modules.dep.
   */
  rootModules: string[];
  /**
   * Of those, the device drivers (a module with a pci: or virtio: alias: the NIC drivers and
   * virtio_pci): a machine needs only the one of its own NIC, so an image's kernel may lack the others.
   */
  deviceModules: string[];
  /** Their pci: and virtio: aliases: how a driver built into an image's kernel is known when the kernel recorded none for it. */
  deviceAliases: { pattern: string; module: string }[];
}

/** Reads a kit directory: kit.env, and from its initrd the load order and each module's needs. */
export async function readKit(dir: string): Promise<Kit> {
  const env = await fs.readFile(path.join(dir, 'kit.env'), 'utf8');
  const kernelVersion = /^KERNEL_VERSION=(.+)$/m.exec(env)?.[1];
  if (!kernelVersion) throw new Error(`${dir}/kit.env names no KERNEL_VERSION: rebuild the kit with ramboot/cached-build`);
  const initrd = path.join(dir, 'initrd.img');
  const files = new Map(unpackCpio(await promisify(gunzip)(await fs.readFile(initrd))).map((entry) => [entry.name, entry.data!]));
  const loadOrderText = files.get('lib/modules/load-order');
  if (!loadOrderText) throw new Error(`${initrd} has no lib/modules/load-order: not a ramboot kit`);
  const loadOrder = loadOrderText
    .toString('utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const [name = '', ...params] = line.trim().split(/\s+/);
      return { name, params: params.join(' ') };
    });
  const moduleFile = (name: string) => files.get(`lib/modules/${name}.ko`) ?? Buffer.alloc(0);
  const needed = new Set(
    loadOrder.flatMap(({ name }) =>
      modinfoOf(moduleFile(name), 'depends')
        .flatMap((list) => list.split(','))
        .filter(Boolean)
        .map(moduleKey),
    ),
  );
  const rootModules = loadOrder.map(({ name }) => name).filter((name) => !needed.has(moduleKey(name)));
  const deviceAliases = rootModules.flatMap((module) =>
    modinfoOf(moduleFile(module), 'alias')
      .filter((alias) => alias.startsWith('pci:') || alias.startsWith('virtio:'))
      .map((pattern) => ({ pattern, module })),
  );
  return {
    id: path.basename(dir),
    kernelVersion,
    vmlinuz: path.join(dir, 'vmlinuz'),
    initrd,
    loadOrder,
    rootModules,
    deviceModules: [...new Set(deviceAliases.map(({ module }) => module))],
    deviceAliases,
  };
}

/** Every value of a module's .modinfo `KEY=` (what `modinfo -F KEY` prints). */
function modinfoOf(module: Buffer, key: string): string[] {
  const values: string[] = [];
  const marker = `\0${key}=`;
  for (let at = module.indexOf(marker); at >= 0; at = module.indexOf(marker, at + 1)) {
    const end = module.indexOf(0, at + 1);
    values.push(module.toString('latin1', at + marker.length, end < 0 ? module.length : end));
  }
  return values;
}
