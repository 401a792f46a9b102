import { versionedExportName } from '../rules/names.js';

/**
 * iPXE scripts, rendered from parts that are already validated: export names (exportNamePattern),
 * hosts (canonicalHostName), ports, kernel arguments that passed `cmdlineProblem`, and the root's
 * LV and btrfs subvolume names the inspection found (lvNamePattern, subvolPathPattern: checked
 * again here, as they come from an image). Text that comes from an image (its OS name) is only
 * ever shown through `displayText`.
 *
 * What iPXE's script reader treats specially (ipxe/ipxe, src/image/script.c, src/core/exec.c,
 * src/core/settings.c): a line ending in `\` continues on the next; `${name}` anywhere in a word
 * is replaced by a setting (again and again while any remain), so `${net0/mac}` becomes the MAC;
 * a word starting with `#` ends the command (a comment); the words `;`, `&&` and `||` separate
 * commands; words are split at whitespace with no quoting, and a `:` starting a line is a label.
 */

import { lvNamePattern, subvolPathPattern } from '../inspect/result.js';

/** Image-supplied text (an OS name) reduced to characters no iPXE command can misread, and bounded. */
export function displayText(text: string, maxLength = 60): string {
  return text
    .replace(/[^A-Za-z0-9 .,:()/+_-]/g, '?')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, maxLength);
}

/** Where the machine reached nbdmux over HTTP and NBD, as validated parts. */
export interface BootEndpoint {
  /** The HTTP base the machine used, `http://host[:port]`, built by `httpBase`. */
  httpBase: string;
  /** The NBD server as the initramfs must dial it: an IPv4 address (ramboot does not resolve names). */
  nbdHost: string;
  nbdPort: number;
}

/** `http://host[:port]` from a canonical host name (see canonicalHostName) and the port the client used, if it named one. */
export function httpBase(host: string, port: number | null): string {
  const literal = host.includes(':') ? `[${host}]` : host;
  return `http://${literal}${port === null ? '' : `:${port}`}`;
}

/** Who boots, when a known machine asks (all validated: MAC, host name, hex id, cmdline rules). */
export interface MachineIdentity {
  name: string;
  mac: string;
  machineId: string;
  cmdline: string;
  /** Its state export, for a persistent machine. */
  stateExport: string | null;
}

/**
 * How long a known machine's initramfs re-dials a lost NBD connection while its I/O waits
 * (`nbdroot.reconnect=`): long enough for nbdmux's host to reboot. Safe because nbdmux serves
 * the machine's address the version its boot was written for (src/machines/served.ts); never
 * for a copy-on-write export, whose writes live in a diff file that goes with the connection.
 */
export const machineReconnectSeconds = 300;

/**
 * The script that boots one export: the kernel and initramfs from nbdmux, the root over NBD.
 * A known machine also gets where to report its stages, its state, and its own identity, which
 * systemd takes from the command line over the image's shared /etc/machine-id and hostname.
 */
export function exportScript(
  exp: {
    name: string;
    version: number;
    cmdline: string;
    partition: number | null;
    lv?: string | null;
    subvol?: string | null;
    cow: boolean;
  },
  at: BootEndpoint,
  machine?: MachineIdentity,
): string {
  const files = `${at.httpBase}/boot/${exp.name}`;
  // A machine's files name it, so that their stages land on it when others boot from its address.
  // Both name the NIC iPXE booted from (netX: the one it opened last; busid: PCI vendor and
  // device), so nbdmux boots the image's own kernel when that kernel has the NIC's driver, and
  // both files come from that one decision.
  const fileQuery = `?${machine ? `mac=${machine.mac}&` : ''}busid=\${netX/busid}`;
  const nbd = `${at.nbdHost}:${at.nbdPort}`;
  // The root partition the inspection found: ramboot's own guess (the largest Linux one) may differ.
  const part = exp.partition === null ? '' : `nbdroot.part=${exp.partition}`;
  // Where in that partition: a logical volume, a btrfs subvolume other than the default.
  const lv = exp.lv && lvNamePattern.test(exp.lv) ? `nbdroot.lv=${exp.lv}` : '';
  const subvol = exp.subvol && subvolPathPattern.test(exp.subvol) ? `nbdroot.subvol=${exp.subvol}` : '';
  const identity = machine
    ? [
        `nbdmux.mac=${machine.mac}`,
        `nbdmux.report=${at.httpBase}/boot/report`,
        machine.stateExport === null ? '' : `nbdroot.state=${nbd}/${machine.stateExport}`,
        exp.cow ? '' : `nbdroot.reconnect=${machineReconnectSeconds}`,
        `systemd.hostname=${machine.name}`,
        `systemd.machine_id=${machine.machineId}`,
      ]
    : [];
  // A machine names the version its boot is written for (served to its address alone, see
  // src/machines/served.ts): another machine booting from the same address reads its own.
  const root = machine ? versionedExportName(exp.name, exp.version) : exp.name;
  const kernelArgs = ['initrd=initrd.img', `nbdroot=${nbd}/${root}`, part, lv, subvol, ...identity, exp.cmdline, machine?.cmdline ?? '']
    .filter((arg) => arg !== '')
    .join(' ');
  const who = machine ? `${machine.name} (${machine.mac}) boots ${exp.name}` : `booting ${exp.name}`;
  return lines(
    '#!ipxe',
    `echo nbdmux: ${who}`,
    `kernel ${files}/vmlinuz${fileQuery} ${kernelArgs}`,
    `initrd ${files}/initrd.img${fileQuery}`,
    'boot',
  );
}

/** A known machine that cannot boot now: the console says why, and the ROM moves on to its next boot device. */
export function cannotBootScript(machineName: string, reason: string): string {
  return lines('#!ipxe', `echo nbdmux: machine ${machineName} cannot boot: ${displayText(reason, 200)}`, 'exit 1');
}

export interface MenuEntry {
  name: string;
  /** Shown beside the name, from the image (reduced by displayText here). */
  description: string | null;
}

/**
 * The menu of the exports a machine may boot. With `defaultName` among them, the menu boots it
 * after `timeoutMs` (0: at once, with no menu); otherwise it waits for a choice, so no machine
 * boots an image nobody chose.
 * The chosen item's script is chained: it boots, so nothing here loops back to the menu.
 */
export function menuScript(
  entries: readonly MenuEntry[],
  options: { httpBase: string; defaultName: string | null; timeoutMs: number },
): string {
  if (entries.length === 0) {
    return lines(
      '#!ipxe',
      'echo nbdmux: no export is ready to boot; register one, or check its allow list and the boot status in GET /exports',
      'exit 1',
    );
  }
  const hasDefault = options.defaultName !== null && entries.some((entry) => entry.name === options.defaultName);
  // iPXE's `choose --timeout 0` waits for ever: no wait at all means no menu.
  if (hasDefault && options.timeoutMs === 0) return lines('#!ipxe', `chain ${options.httpBase}/boot/${options.defaultName}.ipxe`);
  const items = entries.map(({ name, description }) => {
    const shown = description === null ? '' : displayText(description);
    return `item ${name} ${name}${shown === '' ? '' : ` - ${shown}`}`;
  });
  const choose = hasDefault ? `choose --default ${options.defaultName} --timeout ${options.timeoutMs} target` : 'choose target';
  const missing =
    options.defaultName !== null && !hasDefault
      ? [`item --gap (the default, ${options.defaultName}, is not available to boot: choose)`]
      : [];
  // `${target}` is iPXE's own setting, holding an item's label: one of the export names above.
  return lines(
    '#!ipxe',
    'menu nbdmux: choose an export to boot',
    ...items,
    ...missing,
    `${choose} || exit 1`,
    `chain ${options.httpBase}/boot/\${target}.ipxe`,
  );
}

function lines(...parts: string[]): string {
  return `${parts.join('\n')}\n`;
}
