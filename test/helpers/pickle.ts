// Test-only pickle byte builder, independent of lib/io's emitter: each function returns
// the bytes of one opcode (as Python's pickle would write them), so tests can assemble
// legacy torch files and hostile pickles byte by byte.
export type Bytes = Uint8Array | number[];

export function cat(...parts: Bytes[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const ascii = (s: string): number[] => Array.from(Buffer.from(s, 'utf8'));
const u32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];

export const op = {
  proto: (v = 2): number[] => [0x80, v],
  stop: [0x2e],
  mark: [0x28],
  tuple: [0x74],
  tuple1: [0x85],
  tuple2: [0x86],
  tuple3: [0x87],
  emptyTuple: [0x29],
  emptyDict: [0x7d],
  emptyList: [0x5d],
  append: [0x61],
  appends: [0x65],
  setitem: [0x73],
  setitems: [0x75],
  reduce: [0x52],
  build: [0x62],
  binpersid: [0x51],
  none: [0x4e],
  true_: [0x88],
  false_: [0x89],
  pop: [0x30],
  stackGlobal: [0x93],
  memoize: [0x94],
  global: (module: string, name: string): number[] => [0x63, ...ascii(`${module}\n${name}\n`)],
  str: (s: string): number[] => {
    const b = ascii(s);
    return [0x58, ...u32(b.length), ...b];
  },
  shortStr: (s: string): number[] => {
    const b = ascii(s);
    return [0x8c, b.length, ...b];
  },
  /** BINUNICODE claiming `len` bytes without providing them. */
  strHeader: (len: number): number[] => [0x58, ...u32(len)],
  int: (v: number): number[] => {
    if (v >= 0 && v < 256) return [0x4b, v];
    if (v >= 0 && v < 65536) return [0x4d, v & 0xff, v >> 8];
    if (v >= -0x80000000 && v <= 0x7fffffff) return [0x4a, ...u32(v >>> 0)];
    return op.long1(BigInt(v));
  },
  long1: (v: bigint): number[] => {
    const bytes: number[] = [];
    let b = v;
    for (;;) {
      const byte = Number(b & 0xffn);
      bytes.push(byte);
      b >>= 8n;
      if ((b === 0n && !(byte & 0x80)) || (b === -1n && byte & 0x80)) break;
    }
    return [0x8a, bytes.length, ...bytes];
  },
  binput: (i: number): number[] => [0x71, i],
  binget: (i: number): number[] => [0x68, i],
  longBinput: (i: number): number[] => [0x72, ...u32(i)],
  longBinget: (i: number): number[] => [0x6a, ...u32(i)],
};

export function intTuple(vs: number[]): Bytes {
  if (vs.length === 0) return op.emptyTuple;
  if (vs.length <= 3) return cat(...vs.map(op.int), [0x84 + vs.length]);
  return cat(op.mark, ...vs.map(op.int), op.tuple);
}

export interface TensorSpec {
  storageType: string; // e.g. 'FloatStorage'
  key: string;
  storageNumel: number;
  offset: number;
  shape: number[];
  stride: number[];
  legacy?: boolean;
}

/** `torch._utils._rebuild_tensor_v2(<persistent storage>, offset, shape, stride, False, OrderedDict())` */
export function tensorV2(t: TensorSpec): Uint8Array {
  const pid = cat(
    op.mark,
    op.str('storage'),
    op.global('torch', t.storageType),
    op.str(t.key),
    op.str('cpu'),
    op.int(t.storageNumel),
    t.legacy ? op.none : [],
    op.tuple,
    op.binpersid,
  );
  return cat(
    op.global('torch._utils', '_rebuild_tensor_v2'),
    op.mark,
    pid,
    op.int(t.offset),
    intTuple(t.shape),
    intTuple(t.stride),
    op.false_,
    op.global('collections', 'OrderedDict'),
    op.emptyTuple,
    op.reduce,
    op.tuple,
    op.reduce,
  );
}

/** An OrderedDict pickle of name -> tensor (protocol 2), optionally wrapped as {wrap: that}. */
export function stateDictPickle(tensors: [string, TensorSpec][], wrap?: string): Uint8Array {
  const inner = cat(
    op.global('collections', 'OrderedDict'),
    op.emptyTuple,
    op.reduce,
    op.mark,
    ...tensors.map(([n, t]) => cat(op.str(n), tensorV2(t))),
    op.setitems,
  );
  if (!wrap) return cat(op.proto(2), inner, op.stop);
  return cat(op.proto(2), op.emptyDict, op.str(wrap), inner, op.setitem, op.str('epoch'), op.int(7), op.setitem, op.stop);
}

export const TORCH_MAGIC = 0x1950a86a20f9469cfc6cn;

/**
 * A legacy (pre-1.6) torch.save file: magic, protocol version 1001, sys info, the main
 * pickle, the sorted storage keys, then each storage as an int64 element count + bytes.
 */
export function legacyFile(main: Uint8Array, storages: { key: string; elemSize: number; bytes: Uint8Array }[], opts: { bigEndian?: boolean } = {}): Uint8Array {
  const magic = cat(op.proto(2), op.long1(TORCH_MAGIC), op.stop);
  const proto = cat(op.proto(2), op.int(1001), op.stop);
  const sys = cat(
    op.proto(2),
    op.emptyDict,
    op.mark,
    op.str('protocol_version'),
    op.int(1001),
    op.str('little_endian'),
    opts.bigEndian ? op.false_ : op.true_,
    op.str('type_sizes'),
    op.emptyDict,
    op.mark,
    op.str('short'),
    op.int(2),
    op.str('int'),
    op.int(4),
    op.str('long'),
    op.int(8),
    op.setitems,
    op.setitems,
    op.stop,
  );
  const sorted = [...storages].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const keys = cat(op.proto(2), op.emptyList, op.mark, ...sorted.map((s) => op.str(s.key)), op.appends, op.stop);
  const parts: Bytes[] = [magic, proto, sys, main, keys];
  for (const s of sorted) {
    const h = Buffer.alloc(8);
    const count = BigInt(s.bytes.length / s.elemSize);
    if (opts.bigEndian) h.writeBigInt64BE(count);
    else h.writeBigInt64LE(count);
    parts.push(h, s.bytes);
  }
  return cat(...parts);
}
