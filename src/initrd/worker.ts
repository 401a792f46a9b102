/**
 * Child process of `BootFilesCache`: builds one image's kernel and initramfs from the image it
 * inherited as descriptor 3, and prints one JSON line: the modules it packed, or why not
 * (`noSpace`: the data dir had no room, which the next request may find freed; `noNicDriver`: the
 * image's kernel cannot drive the machine's NIC, which another machine's may).
 */
import { ImageReadError } from '../inspect/file-tree.js';
import { buildBootFiles, buildRequestSchema, NoNicDriverError } from './build.js';
import { NoSpaceError } from './out-file.js';

const request = buildRequestSchema.parse(JSON.parse(process.argv[2] ?? '{}'));
try {
  process.stdout.write(`${JSON.stringify({ ok: true, modules: await buildBootFiles(3, request) })}\n`);
} catch (err) {
  if (!(err instanceof ImageReadError)) throw err;
  process.stdout.write(
    `${JSON.stringify({ ok: false, reason: err.message, noSpace: err instanceof NoSpaceError, noNicDriver: err instanceof NoNicDriverError })}\n`,
  );
}
