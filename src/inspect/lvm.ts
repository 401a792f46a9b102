import type { ReadAt } from './filesystems.js';
import { numberOf, parseLvmText, sectionOf, stringOf, type LvmSection } from './lvm-text.js';
import type { Partition } from './partitions.js';

const sector = 512;
/** The metadata text of a VG LVM writes is a few KiB; 1 MiB is its default area's size. Beyond: refused unread. */
export const maxMetadataBytes = 1024 * 1024;
const mdaHeaderMagic = ' LVM2 x[5A%r0N*>';
const maxAreas = 8;
const maxLogicalVolumes = 256;

/** A logical volume whose bytes lie in one range of the image. */
export interface LogicalVolume {
  vg: string;
  name: string;
  /** Byte offset in the image, and length. */
  offset: number;
  size: number;
  /** The partition holding its physical volume. */
  partition: number;
}

export interface VolumeGroups {
  /** Partitions carrying an LVM2 label. */
  physicalVolumes: number[];
  /** The visible LVs that map to one range of the image, in metadata order. */
  volumes: LogicalVolume[];
  /** Why a VG or LV was left out: each said so a reason can carry it. */
  problems: string[];
}

interface PhysicalVolume {
  partition: Partition;
  /** The PV's UUID without dashes, as its label holds it. */
  id: string;
  metadata: { offset: number; size: number }[];
}

/**
 * The LVM2 volume groups on the image's partitions, read from each PV's label ("LABELONE",
 * "LVM2 001") and text metadata area, never activated: each visible LV made of linear segments
 * (striped with one stripe) that lie contiguously in its PV maps to one byte range of the image.
 */
export function readVolumeGroups(read: ReadAt, partitions: readonly Partition[]): VolumeGroups {
  const found: VolumeGroups = { physicalVolumes: [], volumes: [], problems: [] };
  const pvs = partitions.flatMap((partition) => {
    const pv = readLabel(read, partition);
    return pv ? [pv] : [];
  });
  found.physicalVolumes = pvs.map((pv) => pv.partition.number);
  const groups = new Map<string, { seqno: number; vg: string; section: LvmSection }>();
  for (const pv of pvs) {
    const metadata = readMetadata(read, pv);
    if ('problem' in metadata) {
      found.problems.push(`the LVM physical volume on partition ${pv.partition.number}: ${metadata.problem}`);
      continue;
    }
    for (const [vg, section] of metadata.groups) {
      const id = stringOf(section, 'id') ?? vg;
      const seqno = numberOf(section, 'seqno') ?? 0;
      if ((groups.get(id)?.seqno ?? -1) < seqno) groups.set(id, { seqno, vg, section });
    }
  }
  for (const { vg, section } of groups.values()) found.volumes.push(...mapVolumes(vg, section, pvs, found.problems));
  return found;
}

function readLabel(read: ReadAt, partition: Partition): PhysicalVolume | null {
  for (let i = 0; i < 4; i++) {
    const label = read(partition.offset + i * sector, sector);
    if (label.length < sector || label.toString('latin1', 0, 8) !== 'LABELONE' || label.toString('latin1', 24, 32) !== 'LVM2 001') continue;
    const headerAt = label.readUInt32LE(20);
    if (headerAt < 32 || headerAt + 40 > sector) return null;
    const id = label.toString('latin1', headerAt, headerAt + 32);
    // Two lists of (offset, size) pairs, each ended by zeros: data areas, then metadata areas.
    let at = headerAt + 40;
    const lists: { offset: number; size: number }[][] = [[], []];
    for (const list of lists) {
      for (; at + 16 <= sector; at += 16) {
        const offset = Number(label.readBigUInt64LE(at));
        const size = Number(label.readBigUInt64LE(at + 8));
        if (offset === 0) break;
        if (list.length < maxAreas) list.push({ offset, size });
      }
      at += 16;
    }
    return { partition, id, metadata: lists[1]! };
  }
  return null;
}

/** The VG sections of the newest metadata text in the PV's first metadata area. */
function readMetadata(read: ReadAt, pv: PhysicalVolume): { groups: Map<string, LvmSection> } | { problem: string } {
  const area = pv.metadata[0];
  if (!area) return { problem: 'it has no metadata area (its VG metadata lives on another PV)' };
  if (area.offset + area.size > pv.partition.size || area.size < sector)
    return { problem: `its metadata area (${area.size} bytes at ${area.offset}) lies outside the partition` };
  const header = read(pv.partition.offset + area.offset, sector);
  if (header.length < 64 || header.toString('latin1', 4, 20) !== mdaHeaderMagic)
    return { problem: 'its metadata area has no LVM2 header: the metadata is damaged' };
  const textAt = Number(header.readBigUInt64LE(40));
  const textSize = Number(header.readBigUInt64LE(48));
  if (textSize === 0) return { problem: 'its metadata area holds no metadata' };
  if (textSize > maxMetadataBytes)
    return { problem: `its metadata text claims ${textSize} bytes, more than the ${maxMetadataBytes} nbdmux reads` };
  if (textAt < sector || textAt >= area.size) return { problem: `its metadata text lies outside its area (at ${textAt})` };
  // The area is a ring after its 512-byte header: text reaching its end goes on from the header's end.
  const first = Math.min(textSize, area.size - textAt);
  const bytes = Buffer.concat([
    read(pv.partition.offset + area.offset + textAt, first),
    read(pv.partition.offset + area.offset + sector, textSize - first),
  ]);
  if (bytes.length < textSize) return { problem: 'its metadata text is cut short by the image' };
  let parsed: LvmSection;
  try {
    parsed = parseLvmText(bytes.toString('latin1').replace(/\0+$/, ''));
  } catch (err) {
    return { problem: `its metadata text is garbled (${(err as Error).message})` };
  }
  const groups = new Map([...parsed].flatMap(([name, value]) => (value instanceof Map ? [[name, value] as const] : [])));
  if (groups.size === 0) return { problem: 'its metadata text names no volume group' };
  return { groups };
}

function mapVolumes(vg: string, section: LvmSection, pvs: PhysicalVolume[], problems: string[]): LogicalVolume[] {
  const extentSize = numberOf(section, 'extent_size');
  const physical = sectionOf(section, 'physical_volumes');
  const logical = sectionOf(section, 'logical_volumes');
  if (!extentSize || !physical || !logical) {
    problems.push(`volume group ${vg}'s metadata lacks extent_size, physical_volumes or logical_volumes`);
    return [];
  }
  const volumes: LogicalVolume[] = [];
  for (const [name, lv] of [...logical].slice(0, maxLogicalVolumes)) {
    if (!(lv instanceof Map)) continue;
    const status = lv.get('status');
    if (!Array.isArray(status) || !status.includes('VISIBLE')) continue;
    const mapped = mapVolume(vg, name, lv, extentSize * sector, physical, pvs);
    if ('problem' in mapped) problems.push(`${vg}/${name}: ${mapped.problem}`);
    else volumes.push(mapped);
  }
  return volumes;
}

/** The image range of one LV: its segments, in order, each one stripe on a PV of this image, adjacent. */
function mapVolume(
  vg: string,
  name: string,
  lv: LvmSection,
  extentBytes: number,
  physical: LvmSection,
  pvs: PhysicalVolume[],
): LogicalVolume | { problem: string } {
  const count = numberOf(lv, 'segment_count') ?? 0;
  if (count === 0 || count > 1024) return { problem: `it has ${count} segments` };
  let range: { offset: number; size: number; partition: Partition } | null = null;
  for (let i = 1; i <= count; i++) {
    const segment = sectionOf(lv, `segment${i}`);
    if (!segment) return { problem: `its segment${i} is missing` };
    const type = stringOf(segment, 'type');
    const stripes = segment.get('stripes');
    if (type !== 'striped' || numberOf(segment, 'stripe_count') !== 1 || !Array.isArray(stripes) || stripes.length !== 2)
      return {
        problem: `segment ${i} is ${type ?? 'untyped'}${type === 'striped' ? ` over ${String(numberOf(segment, 'stripe_count'))} stripes` : ''}: nbdmux reads linear LVs only (not striped, raid, mirror, thin or cached ones)`,
      };
    const [pvName, firstExtent] = stripes;
    const pvSection = typeof pvName === 'string' ? sectionOf(physical, pvName) : null;
    const pvId = pvSection ? stringOf(pvSection, 'id')?.replaceAll('-', '') : undefined;
    const pv = pvs.find((p) => p.id === pvId);
    const peStart = pvSection ? numberOf(pvSection, 'pe_start') : null;
    if (!pv || peStart === null || typeof firstExtent !== 'number')
      return { problem: `segment ${i} lies on a physical volume that is not in this image` };
    const start = numberOf(segment, 'start_extent');
    const extents = numberOf(segment, 'extent_count');
    if (start === null || !extents) return { problem: `segment ${i} has no extent range` };
    const offset = pv.partition.offset + peStart * sector + firstExtent * extentBytes;
    const size = extents * extentBytes;
    if (offset + size > pv.partition.offset + pv.partition.size)
      return {
        problem: `segment ${i} ends past its physical volume's partition ${pv.partition.number}: the image is cut short or the metadata damaged`,
      };
    if (range === null && start === 0) range = { offset, size, partition: pv.partition };
    else if (
      range !== null &&
      start * extentBytes === range.size &&
      offset === range.offset + range.size &&
      pv.partition === range.partition
    )
      range.size += size;
    else return { problem: `its segments do not lie one after another in the image: nbdmux reads an LV as one range` };
  }
  return { vg, name, offset: range!.offset, size: range!.size, partition: range!.partition.number };
}
