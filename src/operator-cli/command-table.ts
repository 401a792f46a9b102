import { cloudInitFlagNames, cloudInitFlags } from './cloud-init-flags.js';
import { UsageError } from './usage-error.js';

/**
 * Every flag a command may take, declared once: its parser option, how `--help` shows its
 * value, and how its text becomes the value a command reads. A command lists the flags it takes.
 */
export interface FlagSpec {
  type: 'boolean' | 'string';
  multiple?: boolean;
  /** What `--help` shows as the flag's value. */
  placeholder?: string;
  read(value: never): unknown;
}

export const commandFlags = {
  rw: { type: 'boolean', read: Boolean },
  cow: { type: 'boolean', read: Boolean },
  allow: { type: 'string', multiple: true, placeholder: 'CIDR', read: (values: string[] | undefined) => values ?? [] },
  force: { type: 'boolean', read: Boolean },
  live: { type: 'boolean', read: Boolean },
  limit: { type: 'string', placeholder: 'N', read: (text: string | undefined) => (text === undefined ? undefined : checkedLimit(text)) },
  sha256: { type: 'string', placeholder: 'HEX', read: (text: string | undefined) => text },
  name: { type: 'string', placeholder: 'NAME', read: (text: string | undefined) => text },
  export: { type: 'string', placeholder: 'EXPORT', read: (text: string | undefined) => text },
  'no-export': { type: 'boolean', read: Boolean },
  cmdline: { type: 'string', placeholder: 'ARGS', read: (text: string | undefined) => text },
  // Unset unless given: `machines set` changes only what the operator names.
  persistent: { type: 'boolean', read: (value: boolean | undefined) => value },
  'no-persistent': { type: 'boolean', read: Boolean },
  'state-size': { type: 'string', placeholder: 'SIZE', read: (text: string | undefined) => text },
  'keep-state': { type: 'boolean', read: Boolean },
  profile: { type: 'string', placeholder: 'PROFILE', read: (text: string | undefined) => text },
  'no-profile': { type: 'boolean', read: Boolean },
  // A field's value cleared: a machine then takes its profile's, a profile's machines the default.
  unset: { type: 'string', multiple: true, placeholder: 'FIELD', read: (values: string[] | undefined) => (values ?? []).map(checkedField) },
  names: { type: 'string', placeholder: 'PATTERN', read: (text: string | undefined) => text },
  'all-machines': { type: 'boolean', read: Boolean },
  address: { type: 'string', placeholder: 'HOST', read: (text: string | undefined) => text },
  port: { type: 'string', placeholder: 'PORT', read: (text: string | undefined) => (text === undefined ? undefined : checkedPort(text)) },
  user: { type: 'string', placeholder: 'USER', read: (text: string | undefined) => text },
  ...cloudInitFlags,
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof commandFlags;

export interface CommandSpec {
  /** `[NAME]` is optional, `[MAC...]` any number; optional ones come last. */
  args: readonly string[];
  flags: readonly FlagName[];
  help: string;
}

/** Each command once: its arguments, its flags and its line in `--help`. */
export const commandSpecs = {
  ls: { args: [], flags: [], help: 'the exports: serving, then draining' },
  add: {
    args: ['NAME', 'FILE'],
    flags: ['rw', 'cow', 'allow'],
    help:
      "export FILE (a path on the daemon's machine; a relative one is taken from this directory) as NAME, read-only " +
      'unless --rw (clients write the image) or --cow (each client writes to its own copy, discarded when it ' +
      'disconnects); --allow (repeatable) lets only those client ranges use it',
  },
  rm: { args: ['NAME'], flags: ['force'], help: 'stop exporting NAME; live connections drain unless --force cuts them now' },
  show: { args: ['NAME'], flags: [], help: 'one export and its live connections' },
  import: {
    args: ['NAME', 'URL'],
    flags: ['sha256', 'rw', 'cow', 'allow'],
    help:
      "import URL (http://, https://, or file:// on the daemon's machine; xz, zstd, gzip, qcow2, vmdk, vhdx, vdi or raw) as a new " +
      'export NAME, or as a new version of NAME, which serves until the import is ready; --sha256 checks the downloaded bytes. ' +
      'Shows progress until done; exit 1 if it fails',
  },
  versions: { args: ['NAME'], flags: [], help: "NAME's versions, newest first, with the live connections each still serves" },
  rollback: { args: ['NAME', '[VERSION]'], flags: [], help: 'serve the previous version of NAME (or VERSION) to new clients again' },
  connections: { args: [], flags: ['live', 'limit'], help: 'recent NBD connections, newest first (--live: open ones only)' },
  watch: { args: [], flags: [], help: 'live events and connections until Ctrl-C' },
  health: { args: [], flags: [], help: 'whether new NBD clients can be served; exit 1 when not' },
  completion: {
    args: ['SHELL'],
    flags: [],
    help: 'print the completion script for SHELL (bash): eval "$(nbdmux completion bash)" in ~/.bashrc, or save it as /etc/bash_completion.d/nbdmux',
  },
  'machines list': {
    args: [],
    flags: [],
    help: 'the machines (also "nbdmux machines"): export, stage and for how long, address, last seen',
  },
  'machines add': {
    args: ['MAC', 'NAME'],
    flags: ['export', 'cmdline', 'persistent', 'state-size', 'profile'],
    help:
      'a machine whose boot NIC has MAC, with host name NAME, booting EXPORT with extra kernel ARGS; --persistent keeps what ' +
      'it writes across boots, in a state filesystem of SIZE (bytes, or with K, M, G or T; default 4G); what it does not ' +
      'set it takes from PROFILE',
  },
  'machines set': {
    args: ['MAC'],
    flags: [
      'name',
      'profile',
      'no-profile',
      'export',
      'no-export',
      'cmdline',
      'persistent',
      'no-persistent',
      'state-size',
      ...cloudInitFlagNames,
      'unset',
      'keep-state',
    ],
    help:
      "change what is given; --unset FIELD (export, cmdline, persistent, state-size, user-data, ...) clears its own value so its profile's " +
      'applies; a new export discards the state of a persistent machine unless --keep-state, --no-persistent discards it, ' +
      'a larger --state-size grows it',
  },
  'machines show': { args: ['MAC'], flags: [], help: 'one machine: every field, its stage and the timeline of its current boot' },
  'machines rm': { args: ['MAC'], flags: [], help: 'forget the machine, deleting its state; refused while it is attached' },
  'machines reset': {
    args: ['MAC'],
    flags: [],
    help: "discard a persistent machine's state: its next boot starts from the image; refused while it is attached",
  },
  'machines bmc': {
    args: ['MAC'],
    flags: ['address', 'port', 'user'],
    help:
      "how nbdmux reaches the machine's BMC over IPMI (port default 623); without --user it takes its profile's; the password " +
      "is read from $NBDMUX_BMC_PASSWORD, never the command line, and the one set (or its profile's) stays when it is unset",
  },
  power: {
    args: ['MAC', 'ACTION'],
    flags: [],
    help: "ACTION on the machine's BMC: status, on, off, cycle, reset, or pxe (boot from the network next); exit 1 if the BMC did not do it",
  },
  reimage: {
    args: ['MAC'],
    flags: ['export'],
    help: 'boot the machine into EXPORT now: set its export, boot from the network next, power cycle it (on, when off); each step shown',
  },
  'machines discovered': {
    args: [],
    flags: [],
    help: 'unknown MACs that asked to boot, the latest first: "machines add" makes one a machine, "profiles adopt" many',
  },
  'profiles list': { args: [], flags: [], help: 'the profiles (also "nbdmux profiles"): what each gives its machines, and how many' },
  'profiles add': {
    args: ['NAME'],
    flags: ['export', 'cmdline', 'persistent', 'state-size', ...cloudInitFlagNames],
    help: 'a profile: what its machines get for each field they do not set themselves (unset: the default)',
  },
  'profiles set': {
    args: ['NAME'],
    flags: ['export', 'cmdline', 'persistent', 'no-persistent', 'state-size', ...cloudInitFlagNames, 'unset', 'all-machines', 'keep-state'],
    help:
      'change what its machines get at their next boot; --all-machines also clears their own values of the fields given, so ' +
      "every machine takes the profile's; --unset FIELD leaves a field to the default",
  },
  'profiles show': { args: ['NAME'], flags: [], help: 'one profile: its fields and its machines' },
  'profiles rm': { args: ['NAME'], flags: [], help: 'remove a profile; refused while machines are in it' },
  'profiles adopt': {
    args: ['NAME', '[MAC...]'],
    flags: ['names'],
    help:
      'make discovered MACs (all of them, or those given) machines of profile NAME, named from --names PATTERN in their order ' +
      "of discovery, e.g. 'rack3-node{01..40}'; all or none",
  },
  'profiles bmc': {
    args: ['NAME'],
    flags: ['user'],
    help:
      'the BMC user its machines share (each gives its own address with "machines bmc", and its own user or password wins); ' +
      'the password is read from $NBDMUX_BMC_PASSWORD, and the one set stays when it is unset',
  },
  'profiles power': {
    args: ['NAME', 'ACTION'],
    flags: [],
    help: 'ACTION (as "power" takes) on every machine of the profile, a bounded number at once: one line per machine; exit 1 if any failed',
  },
  'profiles reimage': {
    args: ['NAME'],
    flags: ['export'],
    help:
      "boot all the profile's machines into EXPORT now: set it as the profile's export for all of them (as --all-machines), then " +
      'boot each from the network; one line per machine, those without a BMC too; exit 1 if any was not rebooted',
  },
} as const satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof commandSpecs;

/** The options every command takes, before or after it. */
export const globalOptions = ['--url', '--json', '--help', '--version'] as const;

/** Each command's words, argument names and flags, for what generates from the table (shell completion). */
export function commandTable(): Array<{ name: CommandName; args: readonly string[]; flags: string[] }> {
  return Object.entries(commandSpecs).map(([name, spec]: [string, CommandSpec]) => ({
    name: name as CommandName,
    args: spec.args,
    flags: spec.flags.map((flag) => `--${flag}`),
  }));
}

export type FlagValues = { [Flag in FlagName]: ReturnType<(typeof commandFlags)[Flag]['read']> };

/** Commands of two words: `machines list`, `profiles adopt`. */
export const groups = ['machines', 'profiles'];

/** The fields `--unset` clears, as the CLI names them, and the input field each is. */
export const unsetFields = {
  export: 'export',
  cmdline: 'cmdline',
  persistent: 'persistent',
  'state-size': 'stateSize',
  'user-data': 'userData',
  'network-config': 'networkConfig',
  'vendor-data': 'vendorData',
} as const;

function checkedField(text: string): (typeof unsetFields)[keyof typeof unsetFields] {
  if (!Object.hasOwn(unsetFields, text))
    throw new UsageError(`--unset takes ${Object.keys(unsetFields).join(', ')}, got ${JSON.stringify(text)}`);
  return unsetFields[text as keyof typeof unsetFields];
}

/** Only the syntax: the daemon judges the range, with its own message. */
function checkedPort(text: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`--port must be a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** Only the syntax: the daemon judges the range, with its own message. */
function checkedLimit(text: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`--limit must be a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}
