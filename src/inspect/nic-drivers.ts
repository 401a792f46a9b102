/**
 * Which of an image's kernel modules drive the NIC a machine booted from, read from the kernel's
 * own `modules.alias` (and `modules.builtin.modinfo` for drivers built in), as udev would pick them.
 * Both files come from the image: every line is bounded and checked, and a line not understood
 * is skipped, never trusted.
 */

/** The NIC as iPXE's `${netX/busid}` names it: only PCI ones are matched. */
export interface NicId {
  vendor: number;
  device: number;
}

/** `PCI 8086:100e`, as reasons name a NIC. */
export function nicText(nic: NicId): string {
  return `PCI ${hex4(nic.vendor)}:${hex4(nic.device)}`;
}

/** A stable short form for cache keys and URLs: `8086-100e`. */
export function nicKey(nic: NicId): string {
  return `${hex4(nic.vendor)}-${hex4(nic.device)}`;
}

function hex4(n: number): string {
  return n.toString(16).padStart(4, '0');
}

/**
 * Parses iPXE's `busid` setting: five bytes as colon-separated hex (ipxe/ipxe,
 * src/net/netdev_settings.c `netdev_fetch_busid`, a `struct dhcp_netdev_desc`: the bus type,
 * then vendor and device big-endian; `setting_type_hex` formats it). Bus type 1 is PCI
 * (src/include/ipxe/device.h BUS_TYPE_PCI). Returns the NIC, or why not.
 */
export function parseBusId(text: string): { ok: true; nic: NicId } | { ok: false; wellFormed: boolean; reason: string } {
  const shown = JSON.stringify(text.slice(0, 40));
  const bytes = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(text);
  if (!bytes)
    return { ok: false, wellFormed: false, reason: `busid ${shown} is not five hex bytes (iPXE's \${netX/busid}, e.g. 01:80:86:10:0e)` };
  const [type, v1, v2, d1, d2] = bytes.slice(1).map((byte) => parseInt(byte, 16)) as [number, number, number, number, number];
  if (type !== 1)
    return {
      ok: false,
      wellFormed: true,
      reason: `busid ${shown} names a NIC on bus type ${type}, not PCI (1): its driver is not looked up`,
    };
  return { ok: true, nic: { vendor: (v1 << 8) | v2, device: (d1 << 8) | d2 } };
}

/** One `alias PATTERN MODULE` the NIC matching reads. */
export interface ModuleAlias {
  pattern: string;
  module: string;
}

export interface AliasTable {
  aliases: ModuleAlias[];
  /** Lines skipped, each with why (the first few). */
  refused: string[];
}

const maxAliasLines = 200_000;
const maxPatternLength = 200;
const maxRefusedShown = 5;
/** A module name as the kernel builds one (and nothing a shell or a path could misread). */
const moduleNamePattern = /^[A-Za-z0-9_-]{1,64}$/;
/** What a pci: or virtio: modalias glob holds: hex digits, field letters, glob characters. */
const patternCharacters = /^[A-Za-z0-9:*?[\]!-]+$/;

/** Only the buses a NIC is matched on are kept: PCI for the card, virtio for virtio-net on top of virtio-pci. */
function wanted(pattern: string): boolean {
  return pattern.startsWith('pci:') || pattern.startsWith('virtio:');
}

/** Parses modules.alias (`alias PATTERN MODULE` lines, `#` comments), keeping the pci: and virtio: ones. */
export function parseModulesAlias(text: string): AliasTable {
  const table: AliasTable = { aliases: [], refused: [] };
  const refuse = (why: string) => {
    if (table.refused.length < maxRefusedShown) table.refused.push(why);
  };
  const lines = text.split('\n');
  if (lines.length > maxAliasLines) refuse(`modules.alias has ${lines.length} lines: only the first ${maxAliasLines} are read`);
  for (const line of lines.slice(0, maxAliasLines)) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const words = line.trim().split(/\s+/);
    if (words.length !== 3 || words[0] !== 'alias') {
      refuse(`${JSON.stringify(line.slice(0, 80))}: not "alias PATTERN MODULE"`);
      continue;
    }
    const [, pattern, module] = words as [string, string, string];
    if (!wanted(pattern)) continue;
    const problem = aliasProblem(pattern, module);
    if (problem) refuse(`${JSON.stringify(line.slice(0, 80))}: ${problem}`);
    else table.aliases.push({ pattern, module });
  }
  return table;
}

/**
 * The pci: and virtio: aliases of drivers built into the kernel, from modules.builtin.modinfo
 * (`MODULE.alias=PATTERN`, NUL-separated, as the kernel's build writes it).
 */
export function parseBuiltinModinfo(data: Buffer): AliasTable {
  const table: AliasTable = { aliases: [], refused: [] };
  for (const record of data.toString('latin1').split('\0')) {
    const at = record.indexOf('.alias=');
    if (at < 0) continue;
    const module = record.slice(0, at);
    const pattern = record.slice(at + '.alias='.length);
    if (!wanted(pattern)) continue;
    const problem = aliasProblem(pattern, module);
    if (problem) {
      if (table.refused.length < maxRefusedShown) table.refused.push(`${JSON.stringify(record.slice(0, 80))}: ${problem}`);
    } else table.aliases.push({ pattern, module });
  }
  return table;
}

function aliasProblem(pattern: string, module: string): string | null {
  if (pattern.length > maxPatternLength) return `a pattern longer than ${maxPatternLength} characters`;
  if (!patternCharacters.test(pattern)) return 'characters no modalias holds';
  if (!moduleNamePattern.test(module)) return 'not a module name';
  return null;
}

/**
 * Whether `text` matches the glob `pattern` (`*`, `?`, `[...]` with `!` or `^` and ranges, as
 * fnmatch(3) without flags, which kmod uses). Iterative with one backtrack point: linear in
 * practice, at worst |pattern| x |text|, and both are bounded.
 */
export function globMatches(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    const step = p < pattern.length ? matchOne(pattern, p, text[t]!) : null;
    if (p < pattern.length && pattern[p] === '*') {
      starP = p++;
      starT = t;
    } else if (step !== null) {
      p = step;
      t++;
    } else if (starP >= 0) {
      p = starP + 1;
      t = ++starT;
    } else return false;
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}

/** If the pattern element at `p` (not `*`) matches `c`, the index after it; else null. */
function matchOne(pattern: string, p: number, c: string): number | null {
  const here = pattern[p]!;
  if (here === '*') return null;
  if (here === '?') return p + 1;
  if (here !== '[') return here === c ? p + 1 : null;
  let i = p + 1;
  const negated = pattern[i] === '!' || pattern[i] === '^';
  if (negated) i++;
  let matched = false;
  let first = true;
  while (i < pattern.length && (first || pattern[i] !== ']')) {
    first = false;
    const low = pattern[i]!;
    if (pattern[i + 1] === '-' && i + 2 < pattern.length && pattern[i + 2] !== ']') {
      if (c >= low && c <= pattern[i + 2]!) matched = true;
      i += 3;
    } else {
      if (c === low) matched = true;
      i++;
    }
  }
  // An unclosed `[` is a literal `[`, as fnmatch takes it.
  if (i >= pattern.length) return c === '[' ? p + 1 : null;
  return matched !== negated ? i + 1 : null;
}

/** The fields of a `pci:vVVVVVVVVdDDDDDDDDsv...sd...bc..sc..i..` alias; null for another shape. */
const pciFields = /^pci:v([^a-z]*)d([^a-z]*)sv([^a-z]*)sd([^a-z]*)bc([^a-z]*)sc([^a-z]*)i([^a-z]*)$/;

/** virtio-pci devices of vendor 0x1af4 that are NICs: legacy 0x1000, modern 0x1040 + virtio id 1. */
const virtioVendor = 0x1af4;
const virtioNetIds = new Set([0x1000, 0x1041]);
/** The virtio bus modalias of a virtio NIC (`virtio:d%08Xv%08X`: device id 1 is net). */
const virtioNetModalias = 'virtio:d00000001v00001AF4';

export type NicDrivers =
  /** `modules`: what to load, the PCI driver first; built-in ones are left out. */
  { ok: true; modules: string[]; shown: string } | { ok: false; reason: string };

/** A NIC's PCI base class (network controller): iPXE boots from nothing else. */
const networkClass = '02';

/**
 * The modules that drive `nic`, from the kernel's alias tables. iPXE names only vendor and device,
 * so an alias matches when its vendor and device globs do and its base class admits a network
 * controller, whatever its subsystem says (ata_generic's `pci:v00008086d*...bc01...` is no NIC's);
 * an alias matching every vendor (a class-wide driver) is not taken, so a guess never stands in
 * for the NIC's own driver. A virtio NIC needs its virtio-bus driver (virtio_net) beside virtio_pci.
 */
export function nicDrivers(nic: NicId, modules: AliasTable, builtin: AliasTable): NicDrivers {
  const pciVendor = `0000${hex4(nic.vendor).toUpperCase()}`;
  const pciDevice = `0000${hex4(nic.device).toUpperCase()}`;
  const pciMatch = (pattern: string) => {
    const fields = pciFields.exec(pattern);
    if (!fields || /^\*+$/.test(fields[1]!)) return false;
    return globMatches(fields[1]!, pciVendor) && globMatches(fields[2]!, pciDevice) && globMatches(fields[5]!, networkClass);
  };
  const found = (match: (pattern: string) => boolean) => {
    const inBuilt = builtin.aliases.find(({ pattern }) => match(pattern));
    if (inBuilt) return { module: null, name: `${inBuilt.module} (built in)` };
    const asModule = modules.aliases.find(({ pattern }) => match(pattern));
    return asModule ? { module: asModule.module, name: asModule.module } : null;
  };
  const refusedNote = () => {
    const refused = [...modules.refused, ...builtin.refused];
    return refused.length > 0 ? `; lines skipped: ${refused.slice(0, 3).join('; ')}` : '';
  };
  const pci = found(pciMatch);
  if (!pci) return { ok: false, reason: `no module of its kernel has a modules.alias for ${nicText(nic)}${refusedNote()}` };
  const parts = [pci];
  if (nic.vendor === virtioVendor && virtioNetIds.has(nic.device)) {
    const net = found((pattern) => pattern.startsWith('virtio:') && globMatches(pattern, virtioNetModalias));
    if (!net)
      return {
        ok: false,
        reason: `${pci.name} drives ${nicText(nic)} on PCI, but no module has the virtio-net alias ${virtioNetModalias}`,
      };
    parts.push(net);
  }
  return {
    ok: true,
    modules: parts.flatMap(({ module }) => (module === null ? [] : [module])),
    shown: parts.map(({ name }) => name).join(' + '),
  };
}
