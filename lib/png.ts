// The PNG codec (no dependency: node:zlib for deflate, lib/io/crc32.ts for the chunk
// CRCs). encodePng writes 8-bit RGB with the per-row filter chosen by the minimum-sum
// heuristic; decodePng reads any PNG as PIL's convert('RGB') does. lib/image.ts
// re-exports it.
import { deflate, deflateSync, inflateSync } from 'node:zlib';
import { promisify } from 'node:util';
import { crc32 } from './io/crc32.js';
import { checkImage, checkImageSize, createImage, ImageDecodeError, type RgbImage } from './rgb.js';

const deflateAsync = promisify(deflate);


export const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/**
 * The filtered scanlines (filter byte + row) of an RGB image, the filter of each row
 * chosen by the minimum-sum-of-absolute-differences heuristic (the first of the
 * lowest on a tie). All five sums come from one pass; only the winner is written.
 */
function filterScanlines(img: RgbImage): Buffer {
  const { width: W, height: H, data } = img;
  const stride = W * 3;
  const raw = Buffer.alloc(H * (stride + 1));
  const zero = new Uint8Array(stride);
  for (let y = 0; y < H; y++) {
    const row = data.subarray(y * stride, (y + 1) * stride);
    const prev = y > 0 ? data.subarray((y - 1) * stride, y * stride) : zero;
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    let s4 = 0;
    for (let i = 0; i < stride; i++) {
      const x = row[i]!;
      const b = prev[i]!;
      let a = 0;
      let c = 0;
      if (i >= 3) {
        a = row[i - 3]!;
        c = prev[i - 3]!;
      }
      s0 += x < 128 ? x : 256 - x;
      let v = (x - a) & 0xff;
      s1 += v < 128 ? v : 256 - v;
      v = (x - b) & 0xff;
      s2 += v < 128 ? v : 256 - v;
      v = (x - ((a + b) >> 1)) & 0xff;
      s3 += v < 128 ? v : 256 - v;
      // paeth(a, b, c), inlined
      const pa = b > c ? b - c : c - b;
      const pb = a > c ? a - c : c - a;
      const d = a + b - c - c;
      const pc = d < 0 ? -d : d;
      v = (x - (pa <= pb && pa <= pc ? a : pb <= pc ? b : c)) & 0xff;
      s4 += v < 128 ? v : 256 - v;
    }
    let type = 0;
    let best = s0;
    if (s1 < best) (type = 1), (best = s1);
    if (s2 < best) (type = 2), (best = s2);
    if (s3 < best) (type = 3), (best = s3);
    if (s4 < best) type = 4;
    const o = y * (stride + 1);
    raw[o] = type;
    const out = raw.subarray(o + 1, o + 1 + stride);
    if (type === 0) out.set(row);
    else
      for (let i = 0; i < stride; i++) {
        const x = row[i]!;
        const a = i >= 3 ? row[i - 3]! : 0;
        const b = prev[i]!;
        const c = i >= 3 ? prev[i - 3]! : 0;
        out[i] = type === 1 ? x - a : type === 2 ? x - b : type === 3 ? x - ((a + b) >> 1) : x - paeth(a, b, c);
      }
  }
  return raw;
}

/** The PNG file around the deflated scanlines. */
function assemblePng(W: number, H: number, idat: Uint8Array): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(W, 0);
  ihdr.writeUInt32BE(H, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  ihdr[10] = 0;
  ihdr[11] = 0;
  ihdr[12] = 0;
  return Buffer.concat([
    Buffer.from(PNG_SIGNATURE),
    chunk('IHDR', ihdr),
    chunk('IDAT', idat),
    chunk('IEND', new Uint8Array(0)),
  ]);
}

/** Encodes an RGB image as an 8-bit RGB PNG (per-row filter chosen by the minimum-sum heuristic). */
export function encodePng(img: RgbImage, opts: { level?: number } = {}): Buffer {
  checkImage(img);
  const raw = filterScanlines(img);
  return assemblePng(img.width, img.height, deflateSync(raw, { level: opts.level ?? 6 }));
}

/**
 * encodePng with the deflate (most of its time) on libuv's thread pool: the same
 * bytes, and several images encode in parallel when awaited together. The filtering
 * still runs on the calling thread; `img` may change once the promise is created.
 */
export async function encodePngAsync(img: RgbImage, opts: { level?: number } = {}): Promise<Buffer> {
  checkImage(img);
  const raw = filterScanlines(img);
  const idat = await deflateAsync(raw, { level: opts.level ?? 6 });
  return assemblePng(img.width, img.height, idat);
}

export const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
] as const;

/**
 * Decodes a PNG (any colour type, bit depth 1..16, interlaced or not) to RGB the way
 * PIL 9.4's `.convert('RGB')` does: alpha and tRNS dropped (not composited), grey
 * replicated, palette looked up (indices past a short palette give PIL's default grey
 * entry i,i,i), 16-bit samples reduced to their high byte, except 16-bit grey without
 * alpha (PIL mode I), which is clipped to 0..255.
 */
export function decodePng(buf: Uint8Array): RgbImage {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 8 || !PNG_SIGNATURE.every((v, i) => b[i] === v)) throw new ImageDecodeError('not a PNG file (bad signature)');
  let pos = 8;
  let W = 0;
  let H = 0;
  let depth = 0;
  let ctype = -1;
  let interlace = 0;
  let palette: Uint8Array | undefined;
  const idat: Buffer[] = [];
  let ended = false;
  while (pos + 12 <= b.length) {
    const len = b.readUInt32BE(pos);
    const type = b.toString('latin1', pos + 4, pos + 8);
    if (pos + 12 + len > b.length) throw new ImageDecodeError(`PNG chunk ${type} is truncated`);
    const data = b.subarray(pos + 8, pos + 8 + len);
    const crc = b.readUInt32BE(pos + 8 + len);
    if (crc32(b.subarray(pos + 4, pos + 8 + len)) !== crc) throw new ImageDecodeError(`PNG chunk ${type} has a bad CRC`);
    pos += 12 + len;
    if (type === 'IHDR') {
      if (data.length !== 13) throw new ImageDecodeError(`PNG IHDR chunk has ${data.length} bytes, not 13`);
      W = data.readUInt32BE(0);
      H = data.readUInt32BE(4);
      depth = data[8]!;
      ctype = data[9]!;
      interlace = data[12]!;
    } else if (type === 'PLTE') palette = new Uint8Array(data);
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') {
      ended = true;
      break;
    }
  }
  if (ctype < 0) throw new ImageDecodeError('PNG has no IHDR chunk');
  if (!ended && idat.length === 0) throw new ImageDecodeError('PNG has no image data');
  const channels = ({ 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as Record<number, number>)[ctype];
  if (channels === undefined || ![1, 2, 4, 8, 16].includes(depth)) throw new ImageDecodeError(`unsupported PNG colour type ${ctype} / bit depth ${depth}`);
  if (W < 1 || H < 1) throw new ImageDecodeError(`PNG has an empty size ${W}x${H}`);
  checkImageSize(W, H, 'PNG');
  if (ctype === 3 && !palette) throw new ImageDecodeError('palette PNG without a PLTE chunk');
  const bitsPP = channels * depth;
  const bpp = Math.max(1, bitsPP >> 3);
  const passes = interlace ? ADAM7 : ([[0, 0, 1, 1]] as const);
  // the filtered scanlines' size, known before inflating: more output is refused, so a
  // few compressed bytes cannot inflate to gigabytes
  let rawSize = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const pw = Math.ceil((W - x0) / dx);
    const ph = Math.ceil((H - y0) / dy);
    if (pw > 0 && ph > 0) rawSize += ph * (1 + Math.ceil((pw * bitsPP) / 8));
  }
  let raw: Buffer;
  try {
    raw = inflateSync(Buffer.concat(idat), { maxOutputLength: rawSize + 65536 });
  } catch (e) {
    throw new ImageDecodeError(`PNG image data is corrupt (${(e as Error).message})`);
  }
  const out = createImage(W, H);
  let off = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const pw = Math.ceil((W - x0) / dx);
    const ph = Math.ceil((H - y0) / dy);
    if (pw <= 0 || ph <= 0) continue;
    const stride = Math.ceil((pw * bitsPP) / 8);
    let prev = new Uint8Array(stride);
    let cur = new Uint8Array(stride);
    for (let y = 0; y < ph; y++) {
      if (off + 1 + stride > raw.length) throw new ImageDecodeError('PNG image data is truncated');
      const ft = raw[off]!;
      const line = raw.subarray(off + 1, off + 1 + stride);
      off += 1 + stride;
      for (let i = 0; i < stride; i++) {
        const a = i >= bpp ? cur[i - bpp]! : 0;
        const up = prev[i]!;
        const c = i >= bpp ? prev[i - bpp]! : 0;
        const x = line[i]!;
        let v: number;
        switch (ft) {
          case 0: v = x; break;
          case 1: v = x + a; break;
          case 2: v = x + up; break;
          case 3: v = x + ((a + up) >> 1); break;
          case 4: v = x + paeth(a, up, c); break;
          default: throw new ImageDecodeError(`PNG uses unknown filter type ${ft}`);
        }
        cur[i] = v & 0xff;
      }
      // Expand the scanline to RGB.
      for (let px = 0; px < pw; px++) {
        const d = ((y0 + y * dy) * W + (x0 + px * dx)) * 3;
        if (depth < 8) {
          const bit = px * depth;
          const s = (cur[bit >> 3]! >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
          if (ctype === 3) {
            out.data[d] = palette![s * 3] ?? s;
            out.data[d + 1] = palette![s * 3 + 1] ?? s;
            out.data[d + 2] = palette![s * 3 + 2] ?? s;
          } else {
            const g = Math.round((s * 255) / ((1 << depth) - 1));
            out.data[d] = out.data[d + 1] = out.data[d + 2] = g;
          }
          continue;
        }
        const bps = depth >> 3; // bytes per sample; take the high byte
        const p = px * channels * bps;
        if (ctype === 3) {
          const s = cur[p]!;
          out.data[d] = palette![s * 3] ?? s;
          out.data[d + 1] = palette![s * 3 + 1] ?? s;
          out.data[d + 2] = palette![s * 3 + 2] ?? s;
        } else if (ctype === 0 && bps === 2) {
          // PIL 9.4 opens 16-bit grey as mode I; I -> RGB clips to 0..255.
          out.data[d] = out.data[d + 1] = out.data[d + 2] = cur[p] ? 255 : cur[p + 1]!;
        } else if (ctype === 0 || ctype === 4) {
          out.data[d] = out.data[d + 1] = out.data[d + 2] = cur[p]!;
        } else {
          out.data[d] = cur[p]!;
          out.data[d + 1] = cur[p + bps]!;
          out.data[d + 2] = cur[p + 2 * bps]!;
        }
      }
      [prev, cur] = [cur, prev];
    }
  }
  return out;
}
