// Test-only zip builder, independent of lib/io's writer: plain (non-zip64) archives with
// stored or deflated members, so tests can make archives lib/io would never write
// (compressed torch storages, odd prefixes, corrupt directories).
import { deflateRawSync } from 'node:zlib';
import { tableCrc32 } from '../../lib/io/crc32.js';

export interface ZipMember {
  name: string;
  data: Uint8Array;
  deflate?: boolean;
}

export function buildZip(members: ZipMember[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let off = 0;
  for (const m of members) {
    const name = Buffer.from(m.name, 'utf8');
    const body = m.deflate ? deflateRawSync(m.data) : Buffer.from(m.data);
    const crc = tableCrc32(m.data);
    const method = m.deflate ? 8 : 0;
    // local file header and central directory entry (APPNOTE 4.3.7 / 4.3.12): [offset, bytes, value]
    locals.push(record(30, [[0, 4, 0x04034b50], [4, 2, 20], [8, 2, method], [14, 4, crc], [18, 4, body.length], [22, 4, m.data.length], [26, 2, name.length]]), name, body);
    const c = record(46, [[0, 4, 0x02014b50], [4, 2, 20], [6, 2, 20], [10, 2, method], [16, 4, crc], [20, 4, body.length], [24, 4, m.data.length], [28, 2, name.length], [42, 4, off]]);
    centrals.push(c, name);
    off += 30 + name.length + body.length;
  }
  const cd = Buffer.concat(centrals);
  const e = record(22, [[0, 4, 0x06054b50], [8, 2, members.length], [10, 2, members.length], [12, 4, cd.length], [16, 4, off]]);
  return Buffer.concat([...locals, cd, e]);
}

/** A zeroed little-endian record of `size` bytes with these [offset, bytes, value] fields set. */
function record(size: number, fields: Array<[offset: number, bytes: 2 | 4, value: number]>): Buffer {
  const b = Buffer.alloc(size);
  for (const [o, n, v] of fields) {
    if (n === 2) b.writeUInt16LE(v, o);
    else b.writeUInt32LE(v, o);
  }
  return b;
}
