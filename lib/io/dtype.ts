// dtype helpers shared by the readers and writers: element sizes, typed-array views
// over raw little-endian bytes, and fast float16/bfloat16 <-> float32 conversion
// (float16 -> float32 is one lookup in a 65536-entry table; bfloat16 -> float32 is a
// 16-bit shift). Hand-written: these are a few lines each and sit on the load path.
import type { DType, HostTensor } from '../tensor.js';

export const DTYPE_SIZE: Record<DType, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  uint8: 1,
  bool: 1,
};

export const ALL_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'int64', 'int32', 'uint8', 'bool'];

export function isDType(s: string): s is DType {
  return (ALL_DTYPES as readonly string[]).includes(s);
}

export type HostData = HostTensor['data'];

/** A fresh, zeroed typed array of the right kind for `dtype` with `numel` elements. */
export function allocFor(dtype: DType, numel: number): HostData {
  switch (dtype) {
    case 'float32':
      return new Float32Array(numel);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(numel);
    case 'int64':
      return new BigInt64Array(numel);
    case 'int32':
      return new Int32Array(numel);
    case 'uint8':
    case 'bool':
      return new Uint8Array(numel);
  }
}

/** The typed array kind expected for a dtype (for validating caller input). */
export function checkDataMatches(dtype: DType, data: unknown): boolean {
  switch (dtype) {
    case 'float32':
      return data instanceof Float32Array;
    case 'float16':
    case 'bfloat16':
      return data instanceof Uint16Array;
    case 'int64':
      return data instanceof BigInt64Array;
    case 'int32':
      return data instanceof Int32Array;
    case 'uint8':
    case 'bool':
      return data instanceof Uint8Array;
  }
}

/** Swap the bytes of every `size`-byte element in place (big-endian sources). */
export function byteswapInPlace(bytes: Uint8Array, size: number): void {
  if (size === 1) return;
  for (let i = 0; i + size <= bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}

let F16_TABLE: Float32Array | null = null;

/** float32 value of every float16 bit pattern (exact). */
export function float16Table(): Float32Array {
  if (F16_TABLE) return F16_TABLE;
  const t = new Float32Array(65536);
  const u = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const man = h & 0x3ff;
    if (exp === 0) {
      // zero or subnormal: man * 2^-24
      t[h] = (sign ? -1 : 1) * man * 5.960464477539063e-8;
    } else if (exp === 31) {
      u[h] = sign | 0x7f800000 | (man << 13);
    } else {
      u[h] = sign | ((exp + 112) << 23) | (man << 13);
    }
  }
  F16_TABLE = t;
  return t;
}

export function float16ToFloat32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  // copy bit patterns (integer moves keep NaN payloads and avoid float conversions)
  const t = F16_BITS ?? (F16_BITS = new Uint32Array(float16Table().buffer));
  const d = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  const n = src.length;
  for (let i = 0; i < n; i++) d[i] = t[src[i]!]!;
  return dst;
}
let F16_BITS: Uint32Array | null = null;

export function bfloat16ToFloat32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const u = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  const n = src.length;
  for (let i = 0; i < n; i++) u[i] = src[i]! << 16;
  return dst;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Round one float32 to the nearest float16 bit pattern (ties to even; NaN kept NaN). */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let man = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 | (man >>> 13) : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = man >>> shift;
    const rest = man & ((1 << shift) - 1);
    if (rest > half || (rest === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (man >>> 13);
  const rest = man & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1))) r++;
  e = r; // may carry into the exponent, which is correct (up to inf)
  return sign | e;
}

/** Round one float32 to the nearest bfloat16 bit pattern (ties to even; NaN kept NaN). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) return ((b >>> 16) | 0x40) & 0xffff;
  const lsb = (b >>> 16) & 1;
  return ((b + 0x7fff + lsb) >>> 16) & 0xffff;
}

export function float32ToFloat16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16Bits(src[i]!);
  return out;
}

export function float32ToBfloat16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToBf16Bits(src[i]!);
  return out;
}

/** Bytes of a host tensor's data (no copy). */
export function dataBytes(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}
