import type http from 'node:http';
import type { SeedFile } from '../boot/seed.js';
import type { MachineSeeds } from '../machines/seeds.js';
import { normaliseMac } from '../rules/mac.js';
import { sendText } from './boot-send.js';
import { sendJsonError } from './reply.js';

/**
 * `GET /boot/seed/MAC/FILE`: a file of the machine's NoCloud seed, which its ramboot initramfs
 * writes into the booted system's overlay for cloud-init (ramboot/install-seed). One 404 for
 * every reason there is none (an unknown MAC, another address than its boot's, no cloud-init
 * document, a file it does not set): the answer tells nothing about machines, and never lists.
 */
export function sendSeed(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  pathname: string,
  client: string,
  target: { rawMac: string; file: SeedFile },
  seeds: Pick<MachineSeeds, 'forBoot'>,
): void {
  const mac = normaliseMac(target.rawMac);
  const text = mac === null ? null : (seeds.forBoot(mac, client)?.[target.file] ?? null);
  if (text === null) {
    sendJsonError(
      res,
      pathname,
      404,
      'NOT_FOUND',
      `no ${target.file} for a machine booting from ${client}: a machine's seed goes to the address that fetched its script, when it or its profile sets a cloud-init document`,
    );
    return;
  }
  // ETag from the content: a boot that already holds it gets 304.
  sendText(req, res, text);
}
