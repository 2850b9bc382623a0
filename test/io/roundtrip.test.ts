// Round trips for every writer (torch zip, safetensors, npy, npz, streaming npz with
// zip64), plus independent checks of the bytes the writers produce.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { HostTensor } from '../../lib/tensor.js';
import {
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
  bfloat16ToFloat32,
  f32ToF16Bits,
  lazyTensors,
  NpzStreamWriter,
  openCheckpoint,
  openNpy,
  openNpz,
  readNpy,
  readNpz,
  saveSafetensors,
  saveTorch,
  writeNpy,
  writeNpz,
  type NpyArray,
} from '../../lib/io/index.js';
import { tableCrc32 } from '../../lib/io/crc32.js';
import { buildZip } from '../helpers/zip.js';
import { npyHeader } from '../helpers/npy.js';
import { tempDir } from '../helpers/tmp.js';
import { expectSameArrays, expectSameData } from '../helpers/same.js';

const FIX = join(import.meta.dirname, '..', 'fixtures');
const dir = tempDir('io-rt');

/** Deterministic pseudo-random numbers (xorshift32). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

function sampleTensors(): Map<string, HostTensor> {
  const r = rng(42);
  const f32 = Float32Array.from({ length: 2 * 3 * 5 }, () => r() * 4 - 2);
  const m = new Map<string, HostTensor>();
  m.set('blocks.0.attn.qkv.weight', { dtype: 'float32', shape: [2, 3, 5], data: f32 });
  m.set('half', { dtype: 'float16', shape: [7], data: float32ToFloat16(Array.from({ length: 7 }, () => r() * 100 - 50)) });
  m.set('bf', { dtype: 'bfloat16', shape: [3, 2], data: float32ToBfloat16(Array.from({ length: 6 }, () => r() - 0.5)) });
  m.set('steps', { dtype: 'int64', shape: [3], data: BigInt64Array.from([0n, -5n, 9007199254740993n]) });
  m.set('i32', { dtype: 'int32', shape: [2, 2], data: Int32Array.from([1, -2, 2147483647, -2147483648]) });
  m.set('u8', { dtype: 'uint8', shape: [4], data: Uint8Array.from([0, 1, 128, 255]) });
  m.set('mask', { dtype: 'bool', shape: [3], data: Uint8Array.from([1, 0, 1]) });
  m.set('scalar', { dtype: 'float32', shape: [], data: Float32Array.from([3.5]) });
  m.set('empty', { dtype: 'float32', shape: [0, 4], data: new Float32Array(0) });
  m.set('ünïcode.näme', { dtype: 'float32', shape: [1], data: Float32Array.from([-0]) });
  return m;
}

async function expectSame(path: string, m: Map<string, HostTensor>, format: string): Promise<void> {
  const ck = await openCheckpoint(path);
  try {
    expect(ck.format).toBe(format);
    expect([...ck.tensors.keys()]).toEqual([...m.keys()]);
    for (const [k, t] of m) {
      const info = ck.tensors.get(k)!;
      expect(info.dtype).toBe(t.dtype);
      expect(info.shape).toEqual(t.shape);
      expect(info.numel).toBe(t.data.length);
      const got = await ck.read(k);
      expect(got.dtype).toBe(t.dtype);
      expect(got.shape).toEqual(t.shape);
      expect(got.data.constructor).toBe(t.data.constructor);
      expect(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), k).toBe(true);
      if (t.dtype === 'float16') expect(await ck.readFloat32(k)).toEqual(float16ToFloat32(t.data as Uint16Array));
      if (t.dtype === 'bfloat16') expect(await ck.readFloat32(k)).toEqual(bfloat16ToFloat32(t.data as Uint16Array));
      if (t.dtype === 'int64') await expect(ck.readFloat32(k)).rejects.toThrow(/'steps' is int64; readFloat32/);
    }
  } finally {
    await ck.close();
  }
}

/** Independent walk of a zip written by lib/io: every local header, in file order. */
function walkLocals(buf: Buffer): { name: string; dataOffset: number; size: number; crc: number; flags: number; extra: Buffer }[] {
  const out = [];
  let p = 0;
  while (buf.readUInt32LE(p) === 0x04034b50) {
    const flags = buf.readUInt16LE(p + 6);
    const crc = buf.readUInt32LE(p + 14);
    let size = buf.readUInt32LE(p + 22);
    const nl = buf.readUInt16LE(p + 26);
    const el = buf.readUInt16LE(p + 28);
    const name = buf.toString('utf8', p + 30, p + 30 + nl);
    const extra = buf.subarray(p + 30 + nl, p + 30 + nl + el);
    if (size === 0xffffffff) {
      expect(extra.readUInt16LE(0)).toBe(1);
      size = Number(extra.readBigUInt64LE(4));
    }
    const dataOffset = p + 30 + nl + el;
    out.push({ name, dataOffset, size, crc, flags, extra });
    p = dataOffset + size;
  }
  expect(buf.readUInt32LE(p)).toBe(0x02014b50); // central directory follows the last member
  return out;
}

describe('dtype conversion', () => {
  it('float16 table and rounding are exact on known values', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65520, 0x7c00], // rounds to inf
      [Infinity, 0x7c00],
      [5.960464477539063e-8, 0x0001], // smallest subnormal
      [6.103515625e-5, 0x0400], // smallest normal
      [0.333251953125, 0x3555],
      [1 + 2 ** -11, 0x3c00], // tie to even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // tie to even (up)
    ];
    for (const [x, bits] of cases) expect(f32ToF16Bits(x), String(x)).toBe(bits);
    const back = float16ToFloat32(Uint16Array.from(cases.map((c) => c[1])));
    expect(back[3]).toBe(-2);
    expect(back[4]).toBe(65504);
    expect(back[7]).toBe(5.960464477539063e-8);
    expect(Number.isNaN(float16ToFloat32(Uint16Array.from([0x7e00]))[0])).toBe(true);
    // every finite float16 survives f16 -> f32 -> f16
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = float16ToFloat32(all);
    let bad = 0;
    for (let i = 0; i < 65536; i++) if (!Number.isNaN(f[i]!) && f32ToF16Bits(f[i]!) !== i) bad++;
    expect(bad).toBe(0);
  });

  it('bfloat16 rounds to nearest even', () => {
    expect(float32ToBfloat16([1, -1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.140625])).toEqual(Uint16Array.from([0x3f80, 0xbf80, 0x3f80, 0x3f82, 0x4049]));
    expect(bfloat16ToFloat32(Uint16Array.from([0x3f80, 0x4049]))).toEqual(Float32Array.from([1, 3.140625]));
  });
});

describe('torch zip writer', () => {
  it('round-trips every dtype, 0-d and empty tensors, non-ASCII names', async () => {
    const m = sampleTensors();
    const p = join(dir, 'rt.bin');
    await saveTorch(p, m);
    await expectSame(p, m, 'torch-zip');
  });

  it('writes the layout torch.load expects: archive/ entries, 64-byte aligned stored data, right CRCs, allowlisted globals only', async () => {
    const m = sampleTensors();
    const p = join(dir, 'layout.bin');
    await saveTorch(p, m);
    const buf = readFileSync(p);
    const locals = walkLocals(buf);
    expect(locals.map((l) => l.name)).toEqual(['archive/data.pkl', 'archive/byteorder', ...[...m.keys()].map((_, i) => `archive/data/${i}`), 'archive/version']);
    for (const l of locals) {
      expect(l.dataOffset % 64, l.name).toBe(0);
      expect(l.flags & 0x8).toBe(0); // sizes and CRC in the local header, no data descriptor
      expect(tableCrc32(buf.subarray(l.dataOffset, l.dataOffset + l.size)), l.name).toBe(l.crc);
      if (l.extra.length) expect(l.extra.toString('latin1', 0, 2)).toBe('FB'); // torch's padding record
    }
    const text = (name: string): string => {
      const l = locals.find((x) => x.name === name)!;
      return buf.toString('latin1', l.dataOffset, l.dataOffset + l.size);
    };
    expect(text('archive/version')).toBe('3\n');
    expect(text('archive/byteorder')).toBe('little');
    const pkl = text('archive/data.pkl');
    expect(pkl.charCodeAt(0)).toBe(0x80);
    const globals = new Set([...pkl.matchAll(/c(torch[\w.]*|collections|builtins|os|posix|numpy[\w.]*|_codecs)\n(\w+)\n/g)].map((g) => `${g[1]}.${g[2]}`));
    expect([...globals].sort()).toEqual(
      ['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch.FloatStorage', 'torch.HalfStorage', 'torch.BFloat16Storage', 'torch.LongStorage', 'torch.IntStorage', 'torch.ByteStorage', 'torch.BoolStorage'].sort(),
    );
    // same pickle structure as torch 1.13's own output for the fixture (opcode-level shape)
    const fix = readFileSync(join(FIX, 'rar-tiny/model.bin'));
    expect(fix.includes(Buffer.from('ctorch._utils\n_rebuild_tensor_v2\n'))).toBe(true);
    expect(buf.includes(Buffer.from('ctorch._utils\n_rebuild_tensor_v2\n'))).toBe(true);
  });

  it('re-saving the torch fixture reproduces every tensor bit for bit (lazy, tensor-by-tensor)', async () => {
    const src = await openCheckpoint(join(FIX, 'vqgan-tiny/model.bin'));
    const p = join(dir, 'vq-resave.bin');
    const ps = join(dir, 'vq.safetensors');
    try {
      await saveTorch(p, lazyTensors(src));
      await saveSafetensors(ps, lazyTensors(src));
      for (const path of [p, ps]) {
        const ck = await openCheckpoint(path);
        expect([...ck.tensors.keys()]).toEqual([...src.tensors.keys()]);
        for (const k of src.tensors.keys()) expectSameData(await ck.readFloat32(k), await src.readFloat32(k), k);
        await ck.close();
      }
    } finally {
      await src.close();
    }
  });

  it('rejects bad input without leaving a file', async () => {
    const p = join(dir, 'bad.bin');
    await expect(saveTorch(p, { a: { dtype: 'float32', shape: [3], data: new Float32Array(2) } })).rejects.toThrow(/'a': shape \(3,\) has 3 elements but data has 2/);
    await expect(saveTorch(p, { a: { dtype: 'float16', shape: [2], data: new Float32Array(2) } })).rejects.toThrow(/'a': data is a Float32Array but dtype float16 needs Uint16Array/);
    expect(existsSync(p)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('zip64 records (threshold lowered for the test) are written and read back', async () => {
    const m = sampleTensors();
    const p = join(dir, 'z64.bin');
    await saveTorch(p, m, { zip64Threshold: 16 });
    const buf = readFileSync(p);
    expect(buf.readUInt32LE(buf.length - 22)).toBe(0x06054b50);
    expect(buf.readUInt32LE(buf.length - 22 - 20)).toBe(0x07064b50); // zip64 locator
    expect(buf.readUInt32LE(buf.length - 22 + 16)).toBe(0xffffffff); // cd offset lives in the zip64 record
    await expectSame(p, m, 'torch-zip');
  });
});

describe('safetensors', () => {
  it('round-trips every dtype; header is JSON padded so data starts 8-aligned', async () => {
    const m = sampleTensors();
    const p = join(dir, 'rt.safetensors');
    await saveSafetensors(p, m, { metadata: { format: 'pt', note: 'x' } });
    const buf = readFileSync(p);
    const n = Number(buf.readBigUInt64LE(0));
    expect((8 + n) % 8).toBe(0);
    const h = JSON.parse(buf.toString('utf8', 8, 8 + n));
    expect(h.__metadata__).toEqual({ format: 'pt', note: 'x' });
    expect(h.half).toEqual({ dtype: 'F16', shape: [7], data_offsets: [h.half.data_offsets[0], h.half.data_offsets[0] + 14] });
    await expectSame(p, m, 'safetensors');
  });
});

describe('npy / npz', () => {
  const arrays = (): Map<string, NpyArray> => {
    const r = rng(7);
    return new Map<string, NpyArray>([
      ['f4', { dtype: 'float32', shape: [2, 3], data: Float32Array.from({ length: 6 }, () => r()) }],
      ['f8', { dtype: 'float64', shape: [3], data: Float64Array.from([Math.PI, -1e300, 5e-324]) }],
      ['f2', { dtype: 'float16', shape: [2, 2], data: float32ToFloat16([1, -2, 0.5, 65504]) }],
      ['bf16', { dtype: 'bfloat16', shape: [2], data: float32ToBfloat16([1.5, -3]) }],
      ['i8', { dtype: 'int64', shape: [2], data: BigInt64Array.from([-1n, 1n << 62n]) }],
      ['i4', { dtype: 'int32', shape: [1, 1, 2], data: Int32Array.from([7, -7]) }],
      ['u1', { dtype: 'uint8', shape: [4, 1], data: Uint8Array.from([0, 9, 200, 255]) }],
      ['b1', { dtype: 'bool', shape: [2], data: Uint8Array.from([1, 0]) }],
      ['names', { dtype: 'unicode', shape: [4], data: ['cls_token', '', 'héllo wörld', 'emoji 🎉 ok'] }],
      ['scalar', { dtype: 'float64', shape: [], data: Float64Array.from([2.5]) }],
      ['empty', { dtype: 'float32', shape: [0], data: new Float32Array(0) }],
    ]);
  };

  it('npy: every dtype round-trips, headers are 64-byte aligned version 1.0 dicts', async () => {
    for (const [k, a] of arrays()) {
      const p = join(dir, `${k}.npy`);
      await writeNpy(p, a);
      const buf = readFileSync(p);
      expect(buf.subarray(0, 8).equals(Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]))).toBe(true);
      const hl = buf.readUInt16LE(8);
      expect((10 + hl) % 64).toBe(0);
      expect(buf[10 + hl - 1]).toBe(0x0a);
      expect(buf.toString('latin1', 10, 10 + hl)).toMatch(/^\{'descr': '[<|][a-zA-Z]\d+', 'fortran_order': False, 'shape': \((\d+(, \d+)*,?)?\), \} *\n$/);
      const back = await readNpy(p);
      expect(back, k).toEqual(a);
    }
    expect(readFileSync(join(dir, 'names.npy')).toString('latin1')).toContain("'descr': '<U11'");
  });

  it('npz: round trip of all dtypes, and of the forward.npz fixture (numpy-written) member by member', async () => {
    const p = join(dir, 'rt.npz');
    const a = arrays();
    await writeNpz(p, a);
    expect(await readNpz(p)).toEqual(a);
    const fx = await readNpz(join(FIX, 'rar-tiny/forward.npz'));
    const p2 = join(dir, 'forward-copy.npz');
    await writeNpz(p2, fx);
    expectSameArrays(await readNpz(p2), fx);
  });

  it('npz: deflated members (np.savez_compressed) are read', async () => {
    const a = arrays();
    const ref = join(dir, 'ref.npz');
    await writeNpz(ref, a);
    // rebuild as a deflated archive from the stored members
    const z = await openNpz(ref);
    const raw = readFileSync(ref);
    const members = [];
    for (const n of z.names) {
      const l = walkLocals(raw).find((x) => x.name === `${n}.npy`)!;
      members.push({ name: `${n}.npy`, data: raw.subarray(l.dataOffset, l.dataOffset + l.size), deflate: true });
    }
    await z.close();
    const p = join(dir, 'deflated.npz');
    writeFileSync(p, buildZip(members));
    const back = await readNpz(p);
    expect(back).toEqual(a);
    const lz = await openNpz(p);
    expect((await lz.readRows('u1', 1, 3)).data).toEqual(Uint8Array.from([9, 200]));
    await lz.close();
  });

  it('big-endian and Fortran-order (trivial) arrays are read', async () => {
    const hdr = npyHeader;
    const be = Buffer.alloc(8);
    be.writeFloatBE(1.5, 0);
    be.writeFloatBE(-2, 4);
    const p = join(dir, 'be.npy');
    writeFileSync(p, Buffer.concat([hdr("{'descr': '>f4', 'fortran_order': True, 'shape': (2, 1), }"), be]));
    expect(await readNpy(p)).toEqual({ dtype: 'float32', shape: [2, 1], data: Float32Array.from([1.5, -2]) });
    const pu = join(dir, 'beu.npy');
    const s = Buffer.alloc(8);
    s.writeUInt32BE(0x41, 0);
    writeFileSync(pu, Buffer.concat([hdr("{'descr': '>U2', 'fortran_order': False, 'shape': (1,), }"), s]));
    expect((await readNpy(pu)).data).toEqual(['A']);
  });

  it('lazy row slices of .npy and .npz read only the requested rows', async () => {
    const N = 37;
    const img = new Uint8Array(N * 4 * 4 * 3).map((_, i) => (i * 7) % 251);
    const a: NpyArray = { dtype: 'uint8', shape: [N, 4, 4, 3], data: img };
    const p = join(dir, 'imgs.npy');
    await writeNpy(p, a);
    const f = await openNpy(p);
    const rows = await f.readRows(5, 9);
    expect(rows.shape).toEqual([4, 4, 4, 3]);
    expect(rows.data).toEqual(img.subarray(5 * 48, 9 * 48));
    await expect(f.readRows(30, 38)).rejects.toThrow(/rows 30\.\.38 are outside 0\.\.37/);
    await f.close();
  });
});

describe('NpzStreamWriter', () => {
  async function writeImages(p: string, N: number, opts: { zip64Threshold?: number } = {}): Promise<{ img: Uint8Array; labels: BigInt64Array }> {
    const r = rng(3);
    const img = new Uint8Array(N * 8 * 8 * 3).map(() => Math.floor(r() * 256));
    const labels = BigInt64Array.from({ length: N }, (_, i) => BigInt(i % 10));
    const w = await NpzStreamWriter.open(p, opts);
    await w.beginArray('arr_0', 'uint8', [N, 8, 8, 3]);
    // odd chunk sizes, including empty ones
    let o = 0;
    while (o < img.length) {
      const n = Math.min(img.length - o, Math.floor(r() * 700));
      await w.write(img.subarray(o, o + n));
      o += n;
    }
    await w.end();
    expect(existsSync(p)).toBe(false); // nothing at the final path until close()
    await w.beginArray('labels', 'int64', [N]);
    await w.write(labels);
    await w.end();
    await w.close();
    return { img, labels };
  }

  it('streams arrays in chunks; readRows reads images i..j by offset', async () => {
    const p = join(dir, 'stream.npz');
    const { img, labels } = await writeImages(p, 50);
    const z = await openNpz(p);
    expect(z.names).toEqual(['arr_0', 'labels']);
    expect((await z.header('arr_0')).shape).toEqual([50, 8, 8, 3]);
    expect((await z.readRows('arr_0', 10, 13)).data).toEqual(img.subarray(10 * 192, 13 * 192));
    expect((await z.read('labels')).data).toEqual(labels);
    await z.close();
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('zip64: with the threshold lowered, sizes and offsets go to zip64 extra fields and the zip64 end record, and read back', async () => {
    const p = join(dir, 'stream64.npz');
    const { img, labels } = await writeImages(p, 40, { zip64Threshold: 1000 });
    const buf = readFileSync(p);
    // independent structure checks
    const locals = walkLocals(buf);
    expect(locals.map((l) => l.name)).toEqual(['arr_0.npy', 'labels.npy']);
    expect(buf.readUInt32LE(locals[0]!.dataOffset - locals[0]!.extra.length - locals[0]!.name.length - 30 + 18)).toBe(0xffffffff); // local sizes deferred to zip64 extra
    const eocd = buf.length - 22;
    expect(buf.readUInt32LE(eocd)).toBe(0x06054b50);
    expect(buf.readUInt16LE(eocd + 10)).toBe(0xffff);
    expect(buf.readUInt32LE(eocd + 16)).toBe(0xffffffff);
    const loc = eocd - 20;
    expect(buf.readUInt32LE(loc)).toBe(0x07064b50);
    const z64 = Number(buf.readBigUInt64LE(loc + 8));
    expect(buf.readUInt32LE(z64)).toBe(0x06064b50);
    expect(Number(buf.readBigUInt64LE(z64 + 32))).toBe(2);
    const cdOff = Number(buf.readBigUInt64LE(z64 + 48));
    // second central entry: offset (> 1000) in its zip64 extra
    let c = cdOff;
    const seen: { name: string; off: number; size: number }[] = [];
    for (let i = 0; i < 2; i++) {
      expect(buf.readUInt32LE(c)).toBe(0x02014b50);
      const nl = buf.readUInt16LE(c + 28);
      const el = buf.readUInt16LE(c + 30);
      const name = buf.toString('utf8', c + 46, c + 46 + nl);
      const ex = buf.subarray(c + 46 + nl, c + 46 + nl + el);
      let size = buf.readUInt32LE(c + 24);
      let off = buf.readUInt32LE(c + 42);
      let q = 4;
      if (ex.length) expect(ex.readUInt16LE(0)).toBe(1);
      if (size === 0xffffffff) (size = Number(ex.readBigUInt64LE(q)), (q += 16)); // uncompressed then compressed
      if (off === 0xffffffff) off = Number(ex.readBigUInt64LE(q));
      seen.push({ name, off, size });
      c += 46 + nl + el;
    }
    expect(seen[1]!.off).toBe(locals[1]!.dataOffset - 30 - 'labels.npy'.length - locals[1]!.extra.length);
    expect(seen[1]!.off).toBeGreaterThan(1000);
    expect(seen[0]!.size).toBe(locals[0]!.size);
    const z = await openNpz(p);
    expect((await z.readRows('arr_0', 39, 40)).data).toEqual(img.subarray(39 * 192));
    expect((await z.read('labels')).data).toEqual(labels);
    await z.close();
  });

  it('a run that dies before close() leaves nothing at the final path; abort() removes the temp file', async () => {
    const p = join(dir, 'killed.npz');
    const w = await NpzStreamWriter.open(p);
    await w.beginArray('arr_0', 'uint8', [10, 2]);
    await w.write(new Uint8Array(5));
    await expect(w.write(new Uint8Array(16))).rejects.toThrow(/'arr_0': 16 more bytes than its shape holds \(15 left\)/);
    await expect(w.end()).rejects.toThrow(/'arr_0': 15 bytes short/);
    expect(existsSync(p)).toBe(false);
    expect(readdirSync(dir).some((f) => f.startsWith('.killed.npz.tmp-'))).toBe(true);
    await w.abort();
    expect(existsSync(p)).toBe(false);
    expect(readdirSync(dir).some((f) => f.startsWith('.killed.npz.tmp-'))).toBe(false);
  });

  it.runIf(process.env.RARGEN_BIG_TESTS === '1')('real zip64: a 4.3 GB member (set RARGEN_BIG_TESTS=1)', async () => {
    const p = join(dir, 'big.npz');
    const N = 22_000; // 22,000 x 256x256x3 = 4.33 GB
    const w = await NpzStreamWriter.open(p);
    await w.beginArray('arr_0', 'uint8', [N, 256, 256, 3]);
    const chunk = new Uint8Array(100 * 196608);
    for (let i = 0; i < N; i += 100) {
      chunk.fill(i % 251);
      await w.write(chunk);
    }
    await w.end();
    await w.close();
    const z = await openNpz(p);
    const rows = await z.readRows('arr_0', N - 1, N);
    expect(rows.data[0]).toBe((N - 100) % 251);
    await z.close();
  }, 600_000);
});
