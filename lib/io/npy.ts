// NumPy .npy / .npz reading and writing, hand-written. Why not an npm package: the
// sample archives for FID are ~10 GB (50,000 x 256x256x3 uint8), so we need a
// *streaming* npz writer (stored zip members, zip64 when past 4 GiB, temp file renamed
// at close) and a *lazy* reader that reads rows i..j of one array by offset. The npy
// header is a small Python dict literal, parsed here without eval and without recursion.
import type { DType } from '../tensor.js';
import { numelOf, shapeToString } from '../tensor.js';
import { byteswapInPlace, dataBytes, type HostData } from './dtype.js';
import { ioFail, wrapErrors } from './errors.js';
import { AtomicFile, RandomAccessFile, writeFully } from './file.js';
import { ZipReader, ZipWriter, type ZipEntry } from './zip.js';
import { crc32 } from './crc32.js';
import { createInflateRaw } from 'node:zlib';
import { once } from 'node:events';
import { limit, overLimit } from './limits.js';

/** dtypes of .npy arrays: the tensor dtypes plus float64 and unicode strings (`<U n`). */
export type NpyDType = DType | 'float64' | 'unicode';

export interface NpyArray {
  dtype: NpyDType;
  /** C-order shape. */
  shape: number[];
  /**
   * float32: Float32Array, float64: Float64Array, float16/bfloat16: Uint16Array (bit
   * patterns), int64: BigInt64Array, int32: Int32Array, uint8/bool: Uint8Array,
   * unicode: string[].
   */
  data: HostData | Float64Array | string[];
}

export interface NpyHeader {
  dtype: NpyDType;
  shape: number[];
  numel: number;
  /** Bytes per element (unicode: 4 x characters). */
  itemSize: number;
  bigEndian: boolean;
  fortranOrder: boolean;
  descr: string;
  /** Offset of the data from the start of the .npy (magic + header). */
  dataOffset: number;
}

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY
const MAX_HEADER = 1 << 20;

const DESCR: Record<string, { dtype: Exclude<NpyDType, 'unicode'>; size: number }> = {
  f4: { dtype: 'float32', size: 4 },
  f8: { dtype: 'float64', size: 8 },
  f2: { dtype: 'float16', size: 2 },
  i8: { dtype: 'int64', size: 8 },
  i4: { dtype: 'int32', size: 4 },
  u1: { dtype: 'uint8', size: 1 },
  b1: { dtype: 'bool', size: 1 },
  // numpy has no bfloat16; ml_dtypes' bfloat16 saves as 2-byte void. Read as bfloat16 bit patterns.
  V2: { dtype: 'bfloat16', size: 2 },
};
const DESCR_FOR: Record<Exclude<NpyDType, 'unicode'>, string> = {
  float32: '<f4',
  float64: '<f8',
  float16: '<f2',
  int64: '<i8',
  int32: '<i4',
  uint8: '|u1',
  bool: '|b1',
  bfloat16: '|V2',
};
const NUMERIC_SIZE: Record<Exclude<NpyDType, 'unicode'>, number> = { float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, uint8: 1, bool: 1 };
const SUPPORTED = "<f4, <f8, <f2, <i8, <i4, |u1, |b1, <U n, |V2 (bfloat16)";

// ---------------------------------------------------------------------------------
// Header dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 16), }

type Lit = string | number | boolean | null | Lit[] | Map<string, Lit>;

/** Parse a Python literal made of dicts, tuples, lists, strings, ints, True/False/None. Iterative. */
export function parsePyLiteral(s: string): Lit {
  let i = 0;
  const stack: { kind: '{' | '(' | '['; items: Lit[]; key?: string | null }[] = [];
  let result: Lit | undefined;
  const fail = (msg: string): never => {
    throw new Error(`${msg} at character ${i} of ${JSON.stringify(s.slice(0, 200))}`);
  };
  const emit = (v: Lit): void => {
    const top = stack[stack.length - 1];
    if (!top) {
      if (result !== undefined) fail('trailing value');
      result = v;
      return;
    }
    if (top.kind === '{') {
      if (top.key === undefined || top.key === null) {
        if (typeof v !== 'string') fail('dict key is not a string');
        top.key = v as string;
        skipWs();
        if (s[i] !== ':') fail("expected ':'");
        i++;
        return;
      }
      top.items.push(top.key, v);
      top.key = null;
    } else top.items.push(v);
    afterItem();
  };
  const skipWs = (): void => {
    while (i < s.length && /\s/.test(s[i]!)) i++;
  };
  const afterItem = (): void => {
    skipWs();
    if (s[i] === ',') i++;
    else if (s[i] !== '}' && s[i] !== ')' && s[i] !== ']') fail("expected ',' or a closing bracket");
  };
  while (true) {
    skipWs();
    if (i >= s.length) break;
    const c = s[i]!;
    if (c === '{' || c === '(' || c === '[') {
      if (stack.length > 32) fail('nesting too deep');
      stack.push({ kind: c, items: [], key: c === '{' ? null : undefined });
      i++;
    } else if (c === '}' || c === ')' || c === ']') {
      const top = stack.pop();
      const open = c === '}' ? '{' : c === ')' ? '(' : '[';
      if (!top || top.kind !== open) fail(`unbalanced '${c}'`);
      if (top!.kind === '{' && top!.key) fail('dict key without value');
      i++;
      if (top!.kind === '{') {
        const m = new Map<string, Lit>();
        for (let k = 0; k < top!.items.length; k += 2) m.set(top!.items[k] as string, top!.items[k + 1]!);
        emit(m);
      } else emit(top!.items);
    } else if (c === "'" || c === '"') {
      const end = s.indexOf(c, i + 1);
      if (end < 0) fail('unterminated string');
      const v = s.slice(i + 1, end);
      i = end + 1;
      emit(v);
    } else {
      const m = /^(True|False|None|[-+]?\d+L?)/.exec(s.slice(i, i + 40));
      if (!m) fail('unexpected token');
      i += m![0].length;
      const t = m![0];
      emit(t === 'True' ? true : t === 'False' ? false : t === 'None' ? null : Number(t.replace(/L$/, '')));
    }
    if (stack.length === 0 && result !== undefined) {
      skipWs();
      if (i < s.length) fail('trailing characters');
      break;
    }
  }
  if (result === undefined || stack.length) fail('incomplete literal');
  return result!;
}

/**
 * Parse the .npy header at the start of `head` (which must hold at least the header).
 * `what` names the file/member for errors; `available` is the member's total size.
 */
export function parseNpyHeader(file: string, what: string, head: Uint8Array, available: number): NpyHeader {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length < 10 || !b.subarray(0, 6).equals(MAGIC)) ioFail(file, `${what}: not a .npy array (bad magic ${JSON.stringify(b.subarray(0, 6).toString('latin1'))})`);
  const major = b[6]!;
  let hlen: number;
  let start: number;
  if (major === 1) {
    hlen = b.readUInt16LE(8);
    start = 10;
  } else if (major === 2 || major === 3) {
    if (b.length < 12) ioFail(file, `${what}: .npy header truncated`);
    hlen = b.readUInt32LE(8);
    start = 12;
  } else ioFail(file, `${what}: unsupported .npy format version ${major}.${b[7]}`);
  if (hlen > MAX_HEADER) ioFail(file, `${what}: .npy header of ${hlen} bytes is too large`);
  if (start + hlen > b.length) ioFail(file, `${what}: .npy header (${hlen} bytes) is truncated`);
  const text = b.toString(major === 3 ? 'utf8' : 'latin1', start, start + hlen);
  let lit: Lit;
  try {
    lit = parsePyLiteral(text.trim());
  } catch (e) {
    ioFail(file, `${what}: cannot parse the .npy header: ${(e as Error).message}`);
  }
  if (!(lit! instanceof Map)) ioFail(file, `${what}: .npy header is not a dict`);
  const d = lit! as Map<string, Lit>;
  const descr = d.get('descr');
  const fo = d.get('fortran_order');
  const shapeLit = d.get('shape');
  if (typeof descr !== 'string') ioFail(file, `${what}: .npy descr ${Array.isArray(descr) ? 'is a structured dtype' : 'is missing'}; supported dtypes: ${SUPPORTED}`);
  if (typeof fo !== 'boolean') ioFail(file, `${what}: .npy header has no boolean 'fortran_order'`);
  if (!Array.isArray(shapeLit)) ioFail(file, `${what}: .npy header has no shape tuple`);
  const shape: number[] = [];
  for (const s of shapeLit as Lit[]) {
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) ioFail(file, `${what}: bad .npy shape ${JSON.stringify(shapeLit)}`);
    shape.push(s as number);
  }
  if (shape.length > 64) ioFail(file, `${what}: .npy shape has too many dimensions`);
  let numel = 1;
  for (const s of shape) {
    numel *= s;
    if (numel > Number.MAX_SAFE_INTEGER) ioFail(file, `${what}: .npy shape ${shapeToString(shape)} is too large`);
  }
  const m = /^([<>|=]?)([a-zA-Z])(\d+)$/.exec(descr as string);
  if (!m) ioFail(file, `${what}: unsupported .npy dtype '${descr}' (supported: ${SUPPORTED})`);
  const [, order, kind, sizeStr] = m!;
  let dtype: NpyDType;
  let itemSize: number;
  if (kind === 'U') {
    const chars = Number(sizeStr);
    if (chars < 0 || chars > 1 << 20) ioFail(file, `${what}: unicode width ${chars} is too large`);
    dtype = 'unicode';
    itemSize = 4 * chars;
  } else {
    const t = DESCR[kind! + sizeStr!];
    if (!t) ioFail(file, `${what}: unsupported .npy dtype '${descr}' (supported: ${SUPPORTED})`);
    dtype = t!.dtype;
    itemSize = t!.size;
  }
  const bigEndian = order === '>' && itemSize > 1;
  const nonTrivial = shape.filter((s) => s > 1).length > 1;
  if (fo && nonTrivial) ioFail(file, `${what}: Fortran-order array of shape ${shapeToString(shape)} is not supported (save it C-contiguous)`);
  const dataOffset = start + hlen;
  if (dataOffset + numel * itemSize > available) {
    ioFail(file, `${what}: ${shapeToString(shape)} ${descr} needs ${numel * itemSize} data bytes but only ${Math.max(0, available - dataOffset)} are present; the array is truncated`);
  }
  return { dtype, shape, numel, itemSize, bigEndian, fortranOrder: fo as boolean, descr: descr as string, dataOffset };
}

/** The .npy header bytes for an array (version 1.0, or 2.0 when the header is long), padded to 64. */
export function encodeNpyHeader(dtype: NpyDType, shape: readonly number[], unicodeChars = 1): Buffer {
  const descr = dtype === 'unicode' ? `<U${unicodeChars}` : DESCR_FOR[dtype];
  if (!descr) throw new RangeError(`unsupported npy dtype ${String(dtype)}`);
  const shp = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shp}, }`;
  for (const [major, pre] of [
    [1, 10],
    [2, 12],
  ] as const) {
    const total = Math.ceil((pre + dict.length + 1) / 64) * 64;
    const hlen = total - pre;
    if (major === 1 && hlen > 0xffff) continue;
    const b = Buffer.alloc(total, 0x20);
    MAGIC.copy(b, 0);
    b[6] = major;
    b[7] = 0;
    if (major === 1) b.writeUInt16LE(hlen, 8);
    else b.writeUInt32LE(hlen, 8);
    b.write(dict, pre, 'latin1');
    b[total - 1] = 0x0a;
    return b;
  }
  throw new RangeError('npy header too long');
}

// ---------------------------------------------------------------------------------
// Decoding / encoding data

function decodeUnicode(file: string, what: string, h: NpyHeader, bytes: Uint8Array): string[] {
  {
    const chars = h.itemSize / 4;
    const out: string[] = new Array(h.numel);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const cps: number[] = [];
    for (let i = 0; i < h.numel; i++) {
      cps.length = 0;
      // numpy strips trailing NULs only (an interior NUL is a character) and refuses
      // code points above U+10FFFF.
      for (let c = 0; c < chars; c++) {
        const cp = dv.getUint32((i * chars + c) * 4, !h.bigEndian);
        if (cp > 0x10ffff) ioFail(file, `${what}: element ${i} holds code point 0x${cp.toString(16)}, above U+10FFFF (not valid UTF-32)`);
        cps.push(cp);
      }
      while (cps.length && cps[cps.length - 1] === 0) cps.pop();
      let s = '';
      for (let k = 0; k < cps.length; k += 4096) s += String.fromCodePoint(...cps.slice(k, k + 4096));
      out[i] = s;
    }
    return out;
  }
}

function typedView(dtype: Exclude<NpyDType, 'unicode'>, buf: ArrayBuffer, n: number, at = 0): HostData | Float64Array {
  switch (dtype) {
    case 'float32':
      return new Float32Array(buf, at, n);
    case 'float64':
      return new Float64Array(buf, at, n);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(buf, at, n);
    case 'int64':
      return new BigInt64Array(buf, at, n);
    case 'int32':
      return new Int32Array(buf, at, n);
    case 'uint8':
    case 'bool':
      return new Uint8Array(buf, at, n);
  }
}

/** Allocate the destination for `n` elements; reading straight into it avoids a copy. */
function allocNumeric(dtype: Exclude<NpyDType, 'unicode'>, n: number): HostData | Float64Array {
  return typedView(dtype, new ArrayBuffer(n * NUMERIC_SIZE[dtype]), n);
}

function checkArray(file: string, name: string, a: NpyArray): void {
  const n = numelOf(a.shape);
  for (const s of a.shape) if (!Number.isSafeInteger(s) || s < 0) ioFail(file, `array '${name}': bad shape ${shapeToString(a.shape)}`);
  const ok =
    a.dtype === 'unicode'
      ? Array.isArray(a.data) && a.data.every((x) => typeof x === 'string')
      : a.dtype === 'float32'
        ? a.data instanceof Float32Array
        : a.dtype === 'float64'
          ? a.data instanceof Float64Array
          : a.dtype === 'float16' || a.dtype === 'bfloat16'
            ? a.data instanceof Uint16Array
            : a.dtype === 'int64'
              ? a.data instanceof BigInt64Array
              : a.dtype === 'int32'
                ? a.data instanceof Int32Array
                : a.dtype === 'uint8' || a.dtype === 'bool'
                  ? a.data instanceof Uint8Array
                  : false;
  if (!ok) ioFail(file, `array '${name}': data (${(a.data as object)?.constructor?.name}) does not match dtype ${String(a.dtype)}`);
  if (a.data.length !== n) ioFail(file, `array '${name}': shape ${shapeToString(a.shape)} has ${n} elements but data has ${a.data.length}`);
}

/** Header + data bytes of an array (unicode is encoded UTF-32LE at the longest string's width). */
function encodeArray(a: NpyArray): { header: Buffer; body: Uint8Array } {
  if (a.dtype === 'unicode') {
    const strs = a.data as string[];
    const cps = strs.map((s) => Array.from(s, (ch) => ch.codePointAt(0)!));
    let chars = 1;
    for (const c of cps) chars = Math.max(chars, c.length);
    const body = Buffer.alloc(strs.length * chars * 4);
    cps.forEach((c, i) => c.forEach((cp, j) => body.writeUInt32LE(cp, (i * chars + j) * 4)));
    return { header: encodeNpyHeader('unicode', a.shape, chars), body };
  }
  return { header: encodeNpyHeader(a.dtype, a.shape), body: dataBytes(a.data as ArrayBufferView) };
}

// ---------------------------------------------------------------------------------
// Lazy readers

interface ByteSource {
  size: number;
  read(offset: number, length: number, what: string): Promise<Buffer>;
  readInto(dst: Uint8Array, offset: number, what: string): Promise<void>;
  /** Compressed sources: reading `length` bytes at once is bounded by this cap (see inflateSource). */
  wholeReadCap?: () => void;
  /** A stored zip member's CRC-32, checked whenever the member is read through from its start to its end. */
  crc32?: number;
}

/** One .npy array (a file or an npz member), read lazily. */
export class NpyReader {
  /** CRC of the member's bytes 0..crcPos (stored zip members; read in order, as read() and FID's row loop do). */
  private crcPos: number;
  private crc: number;
  /** Set once the CRC failed: every later read of the member fails too. */
  private crcError: string | undefined;

  private constructor(
    readonly file: string,
    readonly what: string,
    private readonly src: ByteSource,
    readonly header: NpyHeader,
    head: Uint8Array,
  ) {
    this.crcPos = header.dataOffset;
    this.crc = src.crc32 === undefined ? 0 : crc32(head.subarray(0, header.dataOffset));
  }

  static async open(file: string, what: string, src: ByteSource): Promise<NpyReader> {
    const first = await src.read(0, Math.min(src.size, 4096), `${what} header`);
    let head = first;
    if (first.length >= 12 && first.subarray(0, 6).equals(MAGIC)) {
      const hlen = first[6] === 1 ? first.readUInt16LE(8) + 10 : first.readUInt32LE(8) + 12;
      if (hlen > first.length && hlen <= Math.min(src.size, MAX_HEADER + 12)) head = await src.read(0, hlen, `${what} header`);
    }
    return new NpyReader(file, what, src, parseNpyHeader(file, what, head, src.size), head);
  }

  /** Fold the raw bytes just read at member offset `off` into the running CRC; check it at the member's end. */
  private async checkCrc(off: number, bytes: Uint8Array): Promise<void> {
    const want = this.src.crc32;
    if (want === undefined || off !== this.crcPos || this.crcPos === this.src.size) return;
    this.crc = crc32(bytes, this.crc);
    this.crcPos += bytes.byteLength;
    const dataEnd = this.header.dataOffset + this.header.numel * this.header.itemSize;
    if (this.crcPos === dataEnd && dataEnd < this.src.size) {
      // bytes after the array (numpy writes none): fold them in too
      const rest = Math.min(this.src.size - dataEnd, 1 << 20);
      this.crc = crc32(await this.src.read(dataEnd, rest, this.what), this.crc);
      this.crcPos = dataEnd + rest;
    }
    if (this.crcPos === this.src.size && this.crc !== want) {
      this.crcError = `${this.what} fails its CRC-32 check (0x${this.crc.toString(16)} vs 0x${want.toString(16)} in the zip directory); the file is corrupt`;
    }
    if (this.crcError) ioFail(this.file, this.crcError);
  }

  get dtype(): NpyDType {
    return this.header.dtype;
  }
  get shape(): number[] {
    return this.header.shape.slice();
  }

  /** The whole array. */
  async read(): Promise<NpyArray> {
    this.src.wholeReadCap?.();
    return this.readRange(0, this.header.numel, this.header.shape.slice());
  }

  /** Rows start..end-1 along the first axis (e.g. images i..j of arr_0), read by offset. */
  async readRows(start: number, end: number): Promise<NpyArray> {
    const h = this.header;
    if (h.shape.length === 0) ioFail(this.file, `${this.what}: readRows on a 0-d array`);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > h.shape[0]!) {
      ioFail(this.file, `${this.what}: rows ${start}..${end} are outside 0..${h.shape[0]}`);
    }
    const row = numelOf(h.shape.slice(1));
    return this.readRange(start * row, (end - start) * row, [end - start, ...h.shape.slice(1)]);
  }

  private async readRange(first: number, n: number, shape: number[]): Promise<NpyArray> {
    const h = this.header;
    return wrapErrors(this.file, `reading ${this.what}`, async () => {
      if (this.crcError) ioFail(this.file, this.crcError);
      const off = h.dataOffset + first * h.itemSize;
      if (h.dtype === 'unicode') {
        const bytes = await this.src.read(off, n * h.itemSize, this.what);
        await this.checkCrc(off, bytes);
        return { dtype: h.dtype, shape, data: decodeUnicode(this.file, this.what, { ...h, numel: n }, bytes) };
      }
      const data = allocNumeric(h.dtype, n);
      const bytes = dataBytes(data);
      await this.src.readInto(bytes, off, this.what);
      await this.checkCrc(off, bytes);
      if (h.bigEndian) byteswapInPlace(bytes, h.itemSize);
      return { dtype: h.dtype, shape, data };
    });
  }
}

function fileSource(f: RandomAccessFile, base: number, size: number, crc?: number): ByteSource {
  return {
    size,
    crc32: crc,
    read: (o, l, w) => {
      if (o + l > size) ioFail(f.path, `${w}: bytes ${o}..${o + l} are past its end (${size})`);
      return f.read(base + o, l, w);
    },
    readInto: (d, o, w) => {
      if (o + d.byteLength > size) ioFail(f.path, `${w}: bytes ${o}..${o + d.byteLength} are past its end (${size})`);
      return f.readInto(d, base + o, w);
    },
  };
}

/**
 * A deflated zip member (np.savez_compressed) read by inflating it as a stream: reads
 * move a cursor forward (a read before the cursor restarts from the member's start), so
 * reading rows in order, as FID does, holds one batch in memory and never the whole
 * member, and the header is read without inflating the rest. The member's CRC-32 and
 * size are checked when the stream reaches its end; more output than the declared size
 * is an error at once. Reading the whole array at once allocates it, so that is capped
 * (RARGEN_MAX_INFLATE_BYTES): a few compressed bytes can declare gigabytes of zeros.
 */
function inflateSource(zip: ZipReader, e: ZipEntry, dataOffset: number): ByteSource {
  const path = zip.path;
  const what = `zip entry '${e.name}'`;
  const EMPTY = Buffer.alloc(0);
  let z: ReturnType<typeof createInflateRaw> | null = null;
  let it: AsyncIterator<Buffer> | null = null;
  let pos = 0; // member offset of carry[0]
  let carry: Buffer = Buffer.alloc(0);
  let crc = 0;
  let ended = false;
  const start = (): void => {
    z?.destroy();
    const inf = createInflateRaw({ chunkSize: 1 << 20 });
    z = inf;
    const CH = 4 << 20;
    (async () => {
      for (let p = 0; p < e.compressedSize && !inf.destroyed; p += CH) {
        const c = await zip.file.read(dataOffset + p, Math.min(CH, e.compressedSize - p), what);
        if (!inf.write(c)) await once(inf, 'drain');
      }
      inf.end();
    })().catch((err) => inf.destroy(err as Error));
    it = inf[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    pos = 0;
    carry = EMPTY;
    crc = 0;
    ended = false;
  };
  /** The next output chunk, or null at the end of the stream (checked against size and CRC). */
  const next = async (): Promise<Buffer | null> => {
    if (ended) return null;
    let r: IteratorResult<Buffer>;
    try {
      r = await it!.next();
    } catch (err) {
      ioFail(path, `${what}: cannot inflate: ${(err as Error).message}`);
    }
    const produced = pos + carry.length;
    if (r!.done) {
      ended = true;
      if (produced !== e.size) ioFail(path, `${what} inflates to ${produced} bytes, not the ${e.size} its header says`);
      if (crc !== e.crc32) ioFail(path, `${what} fails its CRC-32 check (0x${crc.toString(16)} vs 0x${e.crc32.toString(16)}); the file is corrupt`);
      return null;
    }
    const c = r!.value;
    if (produced + c.length > e.size) ioFail(path, `${what} inflates to more than the ${e.size} bytes its header says; the archive is corrupt`);
    crc = crc32(c, crc);
    return c;
  };
  const readInto = async (dst: Uint8Array, offset: number, w: string): Promise<void> => {
    const length = dst.byteLength;
    if (offset + length > e.size) ioFail(path, `${w}: bytes ${offset}..${offset + length} are past its end (${e.size})`);
    if (!it || offset < pos) start();
    let done = 0;
    while (done < length) {
      // drop what lies before offset + done, copy what overlaps
      const want = offset + done;
      if (want < pos + carry.length) {
        const from = want - pos;
        const k = Math.min(carry.length - from, length - done);
        dst.set(carry.subarray(from, from + k), done);
        done += k;
        continue;
      }
      pos += carry.length;
      carry = EMPTY;
      const c = await next();
      if (!c) ioFail(path, `${w}: the compressed member ends at byte ${pos}, before byte ${want}`);
      carry = c!;
    }
    // at the member's end, drain the stream so that its size and CRC are checked
    if (offset + length === e.size) {
      while (!ended) {
        pos += carry.length;
        carry = EMPTY;
        carry = (await next()) ?? EMPTY;
      }
    }
  };
  // one read at a time: the cursor is shared
  let queue: Promise<unknown> = Promise.resolve();
  const serial = (dst: Uint8Array, offset: number, w: string): Promise<void> => {
    const run = queue.then(() => readInto(dst, offset, w));
    queue = run.catch(() => undefined);
    return run;
  };
  return {
    size: e.size,
    read: async (o, l, w) => {
      const b = Buffer.allocUnsafe(l);
      await serial(b, o, w);
      return b;
    },
    readInto: serial,
    wholeReadCap: () => {
      if (e.size > limit('inflateBytes')) {
        ioFail(path, `${what} is ${e.size} bytes once inflated, ${overLimit('inflateBytes')}; read it by rows (NpzFile.readRows streams it) or save the archive uncompressed (np.savez)`);
      }
    },
  };
}

/** An opened .npy file. */
export class NpyFile {
  private constructor(
    private readonly f: RandomAccessFile,
    readonly array: NpyReader,
  ) {}
  static async open(path: string): Promise<NpyFile> {
    const f = await RandomAccessFile.open(path);
    try {
      const r = await wrapErrors(path, 'reading the .npy header', () => NpyReader.open(path, path, fileSource(f, 0, f.size)));
      return new NpyFile(f, r);
    } catch (e) {
      await f.close();
      throw e;
    }
  }
  get header(): NpyHeader {
    return this.array.header;
  }
  read(): Promise<NpyArray> {
    return this.array.read();
  }
  readRows(start: number, end: number): Promise<NpyArray> {
    return this.array.readRows(start, end);
  }
  close(): Promise<void> {
    return this.f.close();
  }
}


/** An opened .npz archive: members are read lazily; stored members can be sliced by rows. */
export class NpzFile {
  private readers = new Map<string, NpyReader>();
  private constructor(
    readonly path: string,
    private readonly zip: ZipReader,
    /** Array names (member names without '.npy'), in archive order. */
    readonly names: readonly string[],
    private readonly members: ReadonlyMap<string, ZipEntry>,
  ) {}

  static async open(path: string): Promise<NpzFile> {
    const f = await RandomAccessFile.open(path);
    try {
      return await wrapErrors(path, 'reading the .npz archive', async () => {
        const zip = await ZipReader.open(f);
        const names: string[] = [];
        const members = new Map<string, ZipEntry>();
        for (const n of zip.names) {
          const e = zip.entries.get(n)!;
          if (n.endsWith('/')) continue;
          const key = n.endsWith('.npy') ? n.slice(0, -4) : n;
          const other = members.get(key);
          if (other) ioFail(path, `zip entries '${other.name}' and '${n}' both name the array '${key}'; the archive is ambiguous`);
          names.push(key);
          members.set(key, e);
        }
        return new NpzFile(path, zip, names, members);
      });
    } catch (e) {
      await f.close();
      throw e;
    }
  }

  has(name: string): boolean {
    return this.members.has(name);
  }

  /** The lazy reader of one array (parses its header on first use). */
  async array(name: string): Promise<NpyReader> {
    const cached = this.readers.get(name);
    if (cached) return cached;
    const e = this.members.get(name);
    if (!e) ioFail(this.path, `no array '${name}' in the archive (it has ${this.names.slice(0, 10).join(', ')}${this.names.length > 10 ? ', ...' : ''})`);
    const what = `zip entry '${e.name}'`;
    const r = await wrapErrors(this.path, `reading ${what}`, async () => {
      let src: ByteSource;
      if (e.method === 0) {
        if (e.compressedSize !== e.size) ioFail(this.path, `${what}: stored entry with differing sizes`);
        src = fileSource(this.zip.file, await this.zip.dataOffset(e), e.size, e.crc32);
      } else if (e.method === 8) src = inflateSource(this.zip, e, await this.zip.dataOffset(e));
      else ioFail(this.path, `${what} uses compression method ${e.method}; only stored (0) and deflate (8) are supported`);
      return NpyReader.open(this.path, what, src);
    });
    this.readers.set(name, r);
    return r;
  }

  async header(name: string): Promise<NpyHeader> {
    return (await this.array(name)).header;
  }
  async read(name: string): Promise<NpyArray> {
    return (await this.array(name)).read();
  }
  async readRows(name: string, start: number, end: number): Promise<NpyArray> {
    return (await this.array(name)).readRows(start, end);
  }
  close(): Promise<void> {
    return this.zip.close();
  }
}

export function openNpz(path: string): Promise<NpzFile> {
  return NpzFile.open(path);
}
export function openNpy(path: string): Promise<NpyFile> {
  return NpyFile.open(path);
}

/** Read every array of an .npz (member names without '.npy'), in archive order. */
export async function readNpz(path: string): Promise<Map<string, NpyArray>> {
  const z = await NpzFile.open(path);
  try {
    const out = new Map<string, NpyArray>();
    for (const n of z.names) out.set(n, await z.read(n));
    return out;
  } finally {
    await z.close();
  }
}

export async function readNpy(path: string): Promise<NpyArray> {
  const f = await NpyFile.open(path);
  try {
    return await f.read();
  } finally {
    await f.close();
  }
}

/** Write one array as .npy (temp file + rename). */
export async function writeNpy(path: string, array: NpyArray): Promise<void> {
  checkArray(path, path, array);
  const { header, body } = encodeArray(array);
  const out = await AtomicFile.create(path);
  try {
    await wrapErrors(path, 'writing the .npy file', async () => {
      await writeFully(out.fh, header, 0);
      await writeFully(out.fh, body, header.length);
      await out.commit();
    });
  } catch (e) {
    await out.abort();
    throw e;
  }
}

export type ArraysInput = ReadonlyMap<string, NpyArray> | Record<string, NpyArray> | Iterable<readonly [string, NpyArray]>;

function arrayEntries(input: ArraysInput): [string, NpyArray][] {
  if (input instanceof Map) return [...(input as ReadonlyMap<string, NpyArray>).entries()];
  if (typeof (input as Iterable<unknown>)[Symbol.iterator] === 'function') return [...(input as Iterable<readonly [string, NpyArray]>)].map(([k, v]) => [k, v]);
  return Object.entries(input as Record<string, NpyArray>);
}

export interface NpzWriteOptions {
  /** Test hook: sizes/offsets >= this use zip64 records (default 0xFFFFFFFF). */
  zip64Threshold?: number;
}

/** Write arrays as an .npz (stored members `<name>.npy`, as np.savez does), temp file + rename. */
export async function writeNpz(path: string, arrays: ArraysInput, opts: NpzWriteOptions = {}): Promise<void> {
  const entries = arrayEntries(arrays);
  for (const [name, a] of entries) checkArray(path, name, a);
  const w = await NpzStreamWriter.open(path, opts);
  try {
    for (const [name, a] of entries) {
      const { header, body } = encodeArray(a);
      await w.beginEncoded(name, header, body.byteLength);
      await w.write(body);
      await w.end();
    }
    await w.close();
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/**
 * Streaming .npz writer for archives too large to hold in memory (e.g. 50,000 images
 * of 256x256x3 uint8 = 9.8 GB): open(), then per array beginArray(name, dtype, shape),
 * write(chunk) any number of times (raw little-endian element bytes, C order), end();
 * finally close(). Members are stored with sizes known up front (from the shape), CRCs
 * computed while writing, and zip64 fields when sizes/offsets pass 4 GiB. Everything
 * goes to a temp file renamed onto `path` at close(), so a killed run never leaves a
 * half-written .npz at `path`; abort() deletes the temp file.
 */
export class NpzStreamWriter {
  private names = new Set<string>();
  private cur: { name: string; left: number } | null = null;

  private constructor(private readonly zip: ZipWriter) {}

  get path(): string {
    return this.zip.path;
  }

  static async open(path: string, opts: NpzWriteOptions = {}): Promise<NpzStreamWriter> {
    return new NpzStreamWriter(await ZipWriter.create(path, { zip64Threshold: opts.zip64Threshold }));
  }

  /** Start an array; `unicodeChars` is the width of a 'unicode' array (bytes are UTF-32LE). */
  async beginArray(name: string, dtype: NpyDType, shape: readonly number[], unicodeChars = 1): Promise<void> {
    for (const s of shape) if (!Number.isSafeInteger(s) || s < 0) ioFail(this.path, `array '${name}': bad shape ${shapeToString(shape)}`);
    let header: Buffer;
    try {
      header = encodeNpyHeader(dtype, shape, unicodeChars);
    } catch {
      ioFail(this.path, `array '${name}': unsupported dtype ${String(dtype)}`);
    }
    const item = dtype === 'unicode' ? 4 * unicodeChars : NUMERIC_SIZE[dtype];
    await this.beginEncoded(name, header!, numelOf(shape) * item);
  }

  /** @internal start a member from a ready header and a data byte count. */
  async beginEncoded(name: string, header: Buffer, dataBytes: number): Promise<void> {
    if (this.cur) ioFail(this.path, `array '${this.cur.name}' not ended before '${name}'`);
    if (!name) ioFail(this.path, 'array name is empty');
    if (this.names.has(name)) ioFail(this.path, `array '${name}' written twice`);
    this.names.add(name);
    await wrapErrors(this.path, `writing array '${name}'`, async () => {
      await this.zip.beginEntry(`${name}.npy`, header.length + dataBytes);
      await this.zip.write(header);
    });
    this.cur = { name, left: dataBytes };
  }

  /** Append raw element bytes (any typed array / Buffer) to the current array. */
  async write(chunk: ArrayBufferView): Promise<void> {
    const c = this.cur;
    if (!c) ioFail(this.path, 'write() outside beginArray()/end()');
    const b = dataBytes(chunk);
    if (b.byteLength > c.left) ioFail(this.path, `array '${c.name}': ${b.byteLength} more bytes than its shape holds (${c.left} left)`);
    await wrapErrors(this.path, `writing array '${c.name}'`, () => this.zip.write(b));
    c.left -= b.byteLength;
  }

  async end(): Promise<void> {
    const c = this.cur;
    if (!c) ioFail(this.path, 'end() without beginArray()');
    if (c.left !== 0) ioFail(this.path, `array '${c.name}': ${c.left} bytes short of its shape`);
    await wrapErrors(this.path, `writing array '${c.name}'`, () => this.zip.endEntry());
    this.cur = null;
  }

  async close(): Promise<void> {
    if (this.cur) ioFail(this.path, `array '${this.cur.name}' not ended before close()`);
    await wrapErrors(this.path, 'finishing the .npz archive', () => this.zip.close());
  }

  async abort(): Promise<void> {
    await this.zip.abort();
  }
}
