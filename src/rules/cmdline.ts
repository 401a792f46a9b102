/**
 * Kernel arguments an export or a machine adds to its boot script: what iPXE and the kernel pass
 * through as written, and none that nbdmux writes itself. The control plane validates with these
 * (exports/inputs.ts, machines), the boot scripts rely on them (boot/ipxe.ts).
 */

/** What a booting machine's kernel gets after nbdmux's own arguments, unless the export says otherwise. */
export const defaultCmdline = 'console=tty0 console=ttyS0,115200';

/**
 * The kernel's whole command line is 2048 bytes on x86; nbdmux's own arguments (at most ~650 with
 * a 253-character host name) need the rest. The bound holds for an export's and a machine's
 * arguments together, which a machine's script joins.
 */
export const maxCmdlineLength = 1024;

/**
 * Arguments nbdmux writes itself, for each export and for each machine: a second one on the line
 * would silently win, in the initramfs or in systemd. Names as the kernel and systemd compare
 * them: `-` and `_` are the same (`systemd.machine-id` is `systemd.machine_id`).
 */
const ownArguments: ReadonlyArray<{ name: RegExp; writtenFor: 'export' | 'machine' }> = [
  { name: /^(initrd|nbdroot)$/, writtenFor: 'export' },
  { name: /^(nbdroot\.state|nbdmux\..+|systemd\.hostname|systemd\.machine_id)$/, writtenFor: 'machine' },
];

/** Why iPXE or the kernel would not pass `cmdline` through as written; null when it is fine. */
export function cmdlineProblem(cmdline: string): string | null {
  if (cmdline.length > maxCmdlineLength) return `must be at most ${maxCmdlineLength} characters (the kernel's whole command line is 2048)`;
  if (!/^[\x20-\x7e]*$/.test(cmdline)) return 'must be printable ASCII on one line: no newline, tab or other control character';
  if (cmdline.includes('$'))
    return "must not contain '$': iPXE replaces ${...} with its own settings (such as ${net0/mac}) before the kernel sees the line";
  if (cmdline.includes('\\')) return "must not contain '\\': iPXE joins a line ending in '\\' with the next one";
  if (/[#;&|]/.test(cmdline)) return "must not contain '#', ';', '&' or '|': iPXE reads them as a comment or as the end of the command";
  if (/["'`]/.test(cmdline))
    return 'must not contain quotes: iPXE splits words at spaces without quoting, so the kernel would not get the value as written';
  for (const word of cmdline.split(' ')) {
    const name = word.split('=')[0]!;
    const own = ownArguments.find((argument) => argument.name.test(name.replaceAll('-', '_')));
    if (own !== undefined) return `must not set ${name}=: nbdmux writes it for each ${own.writtenFor} (remove "${word}")`;
  }
  return null;
}

/** Why a machine's arguments cannot follow its export's on one kernel line; null when they fit. */
export function joinedCmdlineProblem(exportCmdline: string, machineCmdline: string): string | null {
  const length = exportCmdline.length + 1 + machineCmdline.length;
  if (length <= maxCmdlineLength) return null;
  return `with its export's ${exportCmdline.length} characters, the kernel would get ${length} of arguments; the two together must be at most ${maxCmdlineLength} (the kernel's whole command line is 2048): shorten this one`;
}
