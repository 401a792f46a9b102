/**
 * The lines that attach or boot an export by hand, as the dashboard offers them to copy. Bundled
 * into the page, so nothing Node-only is imported (types from the client are erased).
 */
import type { BootEndpoint } from './boot/ipxe.js';

const ipv4 = /^\d{1,3}(?:\.\d{1,3}){3}$/;

/** The lines that attach or boot the export, with the daemon's address as its own boot scripts write it. */
export function attachLines(name: string, at: BootEndpoint): Array<{ text: string; what: string } | { note: string }> {
  return [
    { text: `nbd-client ${at.nbdHost} ${at.nbdPort} -N ${name} /dev/nbd0`, what: 'nbd-client command' },
    // The initramfs takes an IPv4 address and resolves no names: no line beats one that cannot boot.
    ipv4.test(at.nbdHost)
      ? { text: `nbdroot=${at.nbdHost}:${at.nbdPort}/${name}`, what: 'kernel command line for the ramboot kit' }
      : {
          note: `nbdroot= takes the server's IPv4 address, and this page reached it as ${at.nbdHost}: open the page by that address for this line.`,
        },
    { text: `chain ${at.httpBase}/boot/${encodeURIComponent(name)}.ipxe`, what: 'iPXE command that boots this export from nbdmux' },
  ];
}
