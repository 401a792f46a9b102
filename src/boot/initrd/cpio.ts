/** The "newc" cpio format the kernel unpacks an initramfs from (Documentation/driver-api/early-userspace). */
export interface CpioEntry {
  name: string;
  /** File type and permission bits, as st_mode. */
  mode: number;
  data?: Buffer;
}

const trailer = 'TRAILER!!!';
const headerBytes = 110;

/** One archive: each entry in order, owned by root, time 0 (the same bytes for the same input). */
export function packCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let length = 0;
  const push = (chunk: Buffer) => {
    parts.push(chunk);
    length += chunk.length;
  };
  const pad = () => push(Buffer.alloc((4 - (length % 4)) % 4));
  [...entries, { name: trailer, mode: 0 }].forEach((entry, i) => {
    const data = entry.data ?? Buffer.alloc(0);
    const isDirectory = (entry.mode & 0o170000) === 0o040000;
    const fields = [i + 1, entry.mode, 0, 0, isDirectory ? 2 : 1, 0, data.length, 0, 0, 0, 0, Buffer.byteLength(entry.name) + 1, 0];
    push(Buffer.from(`070701${fields.map((field) => field.toString(16).padStart(8, '0')).join('')}${entry.name}\0`, 'latin1'));
    pad();
    push(data);
    pad();
  });
  return Buffer.concat(parts, length);
}

/** The entries of one archive, up to its trailer; throws on anything that is not newc. */
export function unpackCpio(archive: Buffer): CpioEntry[] {
  const entries: CpioEntry[] = [];
  let at = 0;
  const align = (n: number) => n + ((4 - (n % 4)) % 4);
  for (;;) {
    const magic = archive.toString('latin1', at, at + 6);
    if (magic !== '070701' && magic !== '070702') throw new Error(`no newc cpio header at byte ${at}`);
    const field = (index: number) => Number.parseInt(archive.toString('latin1', at + 6 + index * 8, at + 14 + index * 8), 16);
    const [mode, size, nameSize] = [field(1), field(6), field(11)];
    const name = archive.toString('latin1', at + headerBytes, at + headerBytes + nameSize - 1);
    if (name === trailer) return entries;
    const dataAt = align(at + headerBytes + nameSize);
    if (dataAt + size > archive.length) throw new Error(`the cpio entry ${name} runs past the archive's end`);
    entries.push({ name, mode, data: archive.subarray(dataAt, dataAt + size) });
    at = align(dataAt + size);
  }
}
