/**
 * LZO1X decompression (the classic bitstream, as the Linux kernel's lzo1x_decompress_safe reads
 * it), bounded: never writes past `maxOut` bytes, never reads past the input, never copies from
 * before the output's start. Throws an Error saying what was wrong.
 */
export function lzo1xDecompress(input: Buffer, maxOut: number): Buffer {
  const out = Buffer.alloc(maxOut);
  let ip = 0;
  let op = 0;
  let state = 0;
  const fail = (why: string): never => {
    throw new Error(`lzo stream ${why} at input byte ${ip}`);
  };
  const byte = () => (ip < input.length ? input[ip++]! : fail('ends early'));
  /** A run length continued by zero bytes, each worth 255, then a last byte. */
  const extended = (base: number) => {
    let length = base;
    while (ip < input.length && input[ip] === 0) {
      length += 255;
      ip++;
      if (length > maxOut + 255) fail('has a run longer than its output');
    }
    return length + byte();
  };
  const literals = (count: number) => {
    if (ip + count > input.length) fail('ends inside literals');
    if (op + count > maxOut) fail('unpacks past its output');
    input.copy(out, op, ip, ip + count);
    ip += count;
    op += count;
  };
  const match = (from: number, length: number) => {
    if (from < 0) fail('refers before its output');
    if (op + length > maxOut) fail('unpacks past its output');
    // Byte by byte: a match may overlap what it writes (a run).
    for (let i = 0; i < length; i++) out[op + i] = out[from + i]!;
    op += length;
  };
  const le16 = () => byte() | (byte() << 8);

  if (input.length > 0 && input[0]! > 17) {
    const t = byte() - 17;
    literals(t);
    state = t < 4 ? t : 4;
  }
  for (;;) {
    const t = byte();
    let from: number;
    let length: number;
    let next: number;
    if (t < 16) {
      if (state === 0) {
        literals((t === 0 ? extended(15) : t) + 3);
        state = 4;
        continue;
      }
      next = t & 3;
      if (state !== 4) {
        match(op - 1 - (t >> 2) - (byte() << 2), 2);
        literals(next);
        state = next;
        continue;
      }
      from = op - 1 - 0x800 - (t >> 2) - (byte() << 2);
      length = 3;
    } else if (t >= 64) {
      next = t & 3;
      from = op - 1 - ((t >> 2) & 7) - (byte() << 3);
      length = (t >> 5) + 1;
    } else if (t >= 32) {
      length = (t & 31) === 0 ? extended(31) + 2 : (t & 31) + 2;
      const distance = le16();
      from = op - 1 - (distance >> 2);
      next = distance & 3;
    } else {
      length = (t & 7) === 0 ? extended(7) + 2 : (t & 7) + 2;
      const distance = le16();
      from = op - ((t & 8) << 11) - (distance >> 2);
      next = distance & 3;
      if (from === op) {
        if (ip !== input.length) fail('has bytes after its end marker');
        return out.subarray(0, op);
      }
      from -= 0x4000;
    }
    match(from, length);
    literals(next);
    state = next;
  }
}
