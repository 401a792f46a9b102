import fs from 'node:fs';
import zlib from 'node:zlib';

/** The NBD reads of one recorded boot, in the order the server received them (bench/record-boot-trace.sh). */
export interface BootTrace {
  imageSize: number;
  reads: Array<{ offset: number; length: number }>;
  /** The think time the recorded machine spent between reads, which a replay leaves out. */
  thinkMicros: number;
  /** The trace's comment lines: where and how it was recorded. */
  about: string[];
}

/** Reads a trace in the format bench/record-boot-trace.sh writes: gzip text, "OFFSET LENGTH GAP_US" a line (hex, hex, decimal). */
export function readBootTrace(file: string): BootTrace {
  const lines = zlib.gunzipSync(fs.readFileSync(file)).toString('utf8').split('\n');
  const about = lines.filter((line) => line.startsWith('#')).map((line) => line.slice(1).trim());
  const sizeLine = about.find((line) => line.startsWith('image-size '));
  if (sizeLine === undefined) throw new Error(`${file}: no "# image-size BYTES" line`);
  const imageSize = Number(sizeLine.slice('image-size '.length));
  const reads: BootTrace['reads'] = [];
  let thinkMicros = 0;
  for (const [index, line] of lines.entries()) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([0-9a-f]+) ([0-9a-f]+) (\d+)$/.exec(line);
    if (!match) throw new Error(`${file}:${index + 1}: not "OFFSET LENGTH GAP_US": ${line}`);
    const read = { offset: parseInt(match[1]!, 16), length: parseInt(match[2]!, 16) };
    if (read.offset + read.length > imageSize) throw new Error(`${file}:${index + 1}: read past the image's ${imageSize} bytes`);
    reads.push(read);
    thinkMicros += Number(match[3]);
  }
  return { imageSize, reads, thinkMicros, about };
}
