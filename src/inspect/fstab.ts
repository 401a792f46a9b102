/** One line of an fstab (fstab(5)), its fields unescaped. */
export interface FstabEntry {
  spec: string;
  mountPoint: string;
  fstype: string;
  options: string[];
}

export interface Fstab {
  entries: FstabEntry[];
  /** Lines refused, each with why (shown to the operator, so bounded). */
  refused: string[];
}

/** How an fstab names a device, as nbdmux can match it against the image's partitions. */
export type DeviceSpec =
  { by: 'uuid' | 'label' | 'partuuid' | 'partlabel'; value: string } | { by: 'partition'; number: number } | { by: 'unknown'; why: string };

/** Far beyond any real fstab, which has tens of lines; the file itself is bounded by its reader. */
const maxLines = 4096;
const maxFieldLength = 1024;
const maxRefusedShown = 5;

/**
 * Parses an fstab: `SPEC MOUNTPOINT [FSTYPE [OPTIONS [FREQ [PASSNO]]]]` separated by blanks,
 * `#` comments, octal escapes (`\040` for a space) in each field. A line with too few or too
 * many fields, a control character or an overlong field is refused with the reason, not guessed at.
 */
export function parseFstab(text: string): Fstab {
  const fstab: Fstab = { entries: [], refused: [] };
  // Cut no further than needed: a hostile file of a million lines costs what 4096 do.
  const lines: string[] = [];
  for (let at = 0; at <= text.length && lines.length <= maxLines;) {
    const end = text.indexOf('\n', at);
    lines.push(text.slice(at, end < 0 ? text.length : end));
    if (end < 0) break;
    at = end + 1;
  }
  if (lines.length > maxLines) fstab.refused.push(`the fstab has more than ${maxLines} lines: only the first ${maxLines} are read`);
  lines.slice(0, maxLines).forEach((line, i) => {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const refuse = (why: string) => fstab.refused.push(`line ${i + 1}: ${why}`);
    if (/[\p{Cc}]/u.test(trimmed.replaceAll('\t', ' '))) return refuse('control characters');
    const fields = trimmed.split(/[ \t]+/);
    if (fields.length < 2 || fields.length > 6) return refuse(`${fields.length} fields, where fstab has 2 to 6`);
    if (fields.some((field) => field.length > maxFieldLength)) return refuse(`a field longer than ${maxFieldLength} characters`);
    const [spec, mountPoint, fstype = 'auto', options = 'defaults'] = fields.map(unescapeOctal) as [string, string, string?, string?];
    fstab.entries.push({ spec, mountPoint, fstype, options: options.split(',') });
  });
  return fstab;
}

/** What the refused lines were, for a reason: the first few. */
export function refusedSummary(fstab: Fstab): string {
  const shown = fstab.refused.slice(0, maxRefusedShown).join('; ');
  return fstab.refused.length > maxRefusedShown ? `${shown}; and ${fstab.refused.length - maxRefusedShown} more` : shown;
}

/** The entry mounting `mountPoint` (the last one, which is what stays mounted there); undefined: none. */
export function entryFor(fstab: Fstab, mountPoint: string): FstabEntry | undefined {
  return fstab.entries.findLast((entry) => normalized(entry.mountPoint) === mountPoint);
}

/**
 * Reads a device spec: `UUID=`, `LABEL=`, `PARTUUID=`, `PARTLABEL=`, their /dev/disk/by-* links,
 * or a partition device of the image's one disk (/dev/sda2, /dev/vda2, /dev/nvme0n1p2, ...).
 */
export function parseDeviceSpec(spec: string): DeviceSpec {
  const tagged = /^(UUID|LABEL|PARTUUID|PARTLABEL)=(.+)$/.exec(spec);
  if (tagged) return { by: tagged[1]!.toLowerCase() as 'uuid', value: unquote(tagged[2]!) };
  const link = /^\/dev\/disk\/by-(uuid|label|partuuid|partlabel)\/(.+)$/.exec(spec);
  // udev writes unsafe characters of a label as \xHH in the link's name.
  if (link)
    return {
      by: link[1] as 'uuid',
      value: link[2]!.replace(/\\x([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))),
    };
  const device = /^\/dev\/(?:(?:[shv]d|xvd)[a-z]+|(?:nvme\d+n\d+|mmcblk\d+|nbd\d+|loop\d+)p)(\d+)$/.exec(spec);
  if (device) return { by: 'partition', number: Number(device[1]) };
  if (spec.startsWith('/dev/mapper/') || /^\/dev\/[^/]+\/[^/]+$/.test(spec))
    return { by: 'unknown', why: `${spec} looks like a device-mapper or LVM volume, which nbdmux does not read` };
  return { by: 'unknown', why: `${spec} is no device spec nbdmux understands (UUID=, LABEL=, PARTUUID=, PARTLABEL= or /dev/sdXN)` };
}

function normalized(mountPoint: string): string {
  return mountPoint.length > 1 ? mountPoint.replace(/\/+$/, '') : mountPoint;
}

function unquote(value: string): string {
  return /^"(.*)"$/.exec(value)?.[1] ?? value;
}

function unescapeOctal(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
