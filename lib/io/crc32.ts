// CRC-32 (zip's polynomial). Uses zlib.crc32 when the running Node has it (>= 20.15,
// native and fast); otherwise a hand-written slicing-by-1 table version.
import * as zlib from 'node:zlib';

let TABLE: Int32Array | null = null;

function tableCrc32(data: Uint8Array, value = 0): number {
  if (!TABLE) {
    TABLE = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      TABLE[n] = c;
    }
  }
  const t = TABLE;
  let c = ~value;
  for (let i = 0; i < data.length; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

type Crc = (data: Uint8Array, value?: number) => number;
const native = (zlib as unknown as { crc32?: Crc }).crc32;

/** CRC-32 of `data`, continuing from `value` (the CRC of the preceding bytes). */
export const crc32: Crc = typeof native === 'function' ? (d, v = 0) => native(d, v) >>> 0 : tableCrc32;
export { tableCrc32 };
