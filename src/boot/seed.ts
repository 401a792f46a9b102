import { createHash } from 'node:crypto';
import type { CloudInitField } from '../profiles/fields.js';
import { isJinja } from '../rules/cloud-config.js';

/** The files of a NoCloud seed, as cloud-init reads them from /var/lib/cloud/seed/nocloud/. */
export const seedFiles = ['meta-data', 'user-data', 'network-config', 'vendor-data'] as const;
export type SeedFile = (typeof seedFiles)[number];

/** What a seed is made of: the machine's name and its own and its profile's documents (null: unset). */
export type SeedInput = {
  name: string;
  machine: Record<CloudInitField, string | null>;
  profile: Record<CloudInitField, string | null> | undefined;
};

/**
 * How the machine's user-data part merges into what is there when both set one. cloud-init
 * (22.4, cloudinit/handlers/cloud_config.py) merges each part into the parts before it, and its
 * dict merger either replaces a key whole or keeps the old one: no setting lets a later part win
 * a key and also append to a list. So the machine's part goes first and the profile's second
 * with `no_replace` (the machine's value of a key wins, as for every other field), lists
 * `recurse_list`ed and `prepend`ed (the profile's runcmd, packages, users come first, then the
 * machine's: its own appended to its profile's), nested mappings merged key by key.
 */
export const profileMergeType = 'dict(no_replace,recurse_list)+list(prepend)+str()';

const boundary = 'nbdmux-seed-part';

/**
 * A machine's NoCloud seed; null when neither it nor its profile sets any cloud-init document,
 * so an image with cloud-init boots as it would without nbdmux. A pure function: the seed route
 * serves it, and its instance-id is a hash of all of it, so cloud-init applies a changed one on
 * a persistent machine and leaves an unchanged one alone.
 */
export function seedOf({ name, machine, profile }: SeedInput): Record<SeedFile, string | null> | null {
  const pick = (field: CloudInitField) => machine[field] ?? profile?.[field] ?? null;
  const userData = mergedUserData(machine.userData, profile?.userData ?? null);
  const networkConfig = pick('networkConfig');
  const vendorData = pick('vendorData');
  if (userData === null && networkConfig === null && vendorData === null) return null;
  const instanceId = `nbdmux-${createHash('sha256')
    .update(JSON.stringify([name, userData, networkConfig, vendorData]))
    .digest('hex')
    .slice(0, 20)}`;
  return {
    // JSON is YAML: the name is a host name and the id hex, but quoting costs nothing.
    'meta-data': `instance-id: ${JSON.stringify(instanceId)}\nlocal-hostname: ${JSON.stringify(name)}\n`,
    // NoCloud finds a seed only when user-data is there too: empty says "nothing to do".
    'user-data': userData ?? '',
    'network-config': networkConfig,
    'vendor-data': vendorData,
  };
}

/** One user-data as set, or both as a MIME multipart cloud-init merges (see profileMergeType). */
function mergedUserData(own: string | null, profile: string | null): string | null {
  if (own === null || profile === null) return own ?? profile;
  return [
    'Content-Type: multipart/mixed; boundary="' + boundary + '"',
    'MIME-Version: 1.0',
    '',
    ...part(own, 'machine.cfg', null),
    ...part(profile, 'profile.cfg', profileMergeType),
    `--${boundary}--`,
    '',
  ].join('\n');
}

/** One part, base64 so no text of it can end it early; jinja ones typed for cloud-init's jinja handler, which keeps the headers. */
function part(text: string, filename: string, mergeType: string | null): string[] {
  return [
    `--${boundary}`,
    `Content-Type: ${isJinja(text) ? 'text/jinja2' : 'text/cloud-config'}; charset="utf-8"`,
    'MIME-Version: 1.0',
    'Content-Transfer-Encoding: base64',
    `Content-Disposition: attachment; filename="${filename}"`,
    ...(mergeType === null ? [] : [`Merge-Type: ${mergeType}`]),
    '',
    ...(Buffer.from(text, 'utf8')
      .toString('base64')
      .match(/.{1,76}/g) ?? []),
  ];
}
