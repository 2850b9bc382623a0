// A hand-made .npy v1.0 header, for tests that write arrays lib/io would never write
// (big-endian, Fortran order, odd or hostile header dicts).

/** The magic, version 1.0, the header length and `dict` padded with spaces to a multiple of 64 bytes, ending in a newline. */
export function npyHeader(dict: string): Buffer {
  const total = Math.ceil((10 + dict.length + 1) / 64) * 64;
  const b = Buffer.alloc(total, 0x20);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(b);
  b.writeUInt16LE(total - 10, 8);
  b.write(dict, 10, 'latin1');
  b[total - 1] = 0x0a;
  return b;
}
