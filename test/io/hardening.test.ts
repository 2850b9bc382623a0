// Issue 12's reader findings, one test each: no tiny file may cost gigabytes, and no
// damaged file may load wrong data silently (where numpy, torch or the safetensors
// reference reader refuse it, so do we). Caps are lowered through their environment
// variables (lib/io/limits.ts) so the tests stay small.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeNpyHeader, openCheckpoint, openNpz, readNpy, readNpz, RargenIOError, writeNpy, writeNpz } from '../../lib/io/index.js';
import { LIMITS } from '../../lib/io/limits.js';
import { unpickle } from '../../lib/io/pickle.js';
import { createImage, encodePng, loadImage } from '../../lib/image.js';
import { tableCrc32 } from '../../lib/io/crc32.js';
import { cat, op, stateDictPickle, type TensorSpec } from '../helpers/pickle.js';
import { buildZip } from '../helpers/zip.js';
import { tempDir } from '../helpers/tmp.js';

const dir = tempDir('io-hardening');
let n = 0;
const put = (bytes: Uint8Array, ext: string): string => {
  const p = join(dir, `h${n++}${ext}`);
  writeFileSync(p, bytes);
  return p;
};
const saved = { ...process.env };
afterEach(() => {
  for (const k of Object.values(LIMITS).map((l) => l.env)) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

async function failure(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

async function readAllTensors(p: string): Promise<Map<string, Float32Array>> {
  const ck = await openCheckpoint(p);
  try {
    const out = new Map<string, Float32Array>();
    for (const k of ck.tensors.keys()) out.set(k, await ck.readFloat32(k));
    return out;
  } finally {
    await ck.close();
  }
}

const torchFile = (specs: [string, TensorSpec][], storage: Uint8Array): string =>
  put(buildZip([{ name: 'a/data.pkl', data: stateDictPickle(specs) }, { name: 'a/data/0', data: storage }]), '.pt');

describe('gigabytes from a few bytes', () => {
  it('a stride-0 view of 32768x32768 over one float is refused before allocating (579-byte file: 4 GiB before)', async () => {
    const p = torchFile([['w', { storageType: 'FloatStorage', key: '0', storageNumel: 1, offset: 0, shape: [32768, 32768], stride: [0, 0] }]], new Uint8Array(4));
    const e = await failure(readAllTensors(p));
    expect(e).toBeInstanceOf(RargenIOError);
    expect(e.message).toContain(p);
    expect(e.message).toContain("tensor 'w': shape (32768, 32768) stride (0, 0) repeats 1 stored elements as 1073741824; materialising it takes 4294967296 bytes");
    expect(e.message).toContain('RARGEN_MAX_EXPANDED_BYTES');
  });

  it('small expanded views still load (as torch would materialise them), up to the cap', async () => {
    const p = torchFile([['w', { storageType: 'FloatStorage', key: '0', storageNumel: 4, offset: 0, shape: [3, 4], stride: [0, 1] }]], new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer));
    expect(Array.from((await readAllTensors(p)).get('w')!)).toEqual([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
    process.env.RARGEN_MAX_EXPANDED_BYTES = '47'; // 12 floats = 48 bytes
    expect((await failure(readAllTensors(p))).message).toContain('over the limit of 47 bytes');
    process.env.RARGEN_MAX_EXPANDED_BYTES = 'lots';
    expect((await failure(readAllTensors(p))).message).toContain('RARGEN_MAX_EXPANDED_BYTES must be a positive integer');
  });

  it('a deflate bomb npz member is refused above the inflate cap for whole reads, and streamed for row reads', async () => {
    const body = Buffer.concat([encodeNpyHeader('uint8', [4 << 20]), Buffer.alloc(4 << 20)]);
    body[body.length - 1] = 9;
    const zip = buildZip([{ name: 'a.npy', data: body, deflate: true }]);
    expect(zip.length).toBeLessThan(8000); // 4 MiB of zeros in ~4 KB
    const p = put(zip, '.npz');
    process.env.RARGEN_MAX_INFLATE_BYTES = String(1 << 20);
    const e = await failure(readNpz(p));
    expect(e.message).toContain(`zip entry 'a.npy' is ${body.length} bytes once inflated, over the limit of 1048576 bytes one compressed zip member may inflate to in memory`);
    expect(e.message).toContain('RARGEN_MAX_INFLATE_BYTES');
    // rows stream through the inflater: the header and a few rows never inflate the rest
    const z = await openNpz(p);
    try {
      expect((await z.header('a')).shape).toEqual([4 << 20]);
      expect(Array.from((await z.readRows('a', 0, 4)).data as Uint8Array)).toEqual([0, 0, 0, 0]);
      expect(Array.from((await z.readRows('a', (4 << 20) - 2, 4 << 20)).data as Uint8Array)).toEqual([0, 9]);
      // backwards: restarts the stream
      expect(Array.from((await z.readRows('a', 1, 2)).data as Uint8Array)).toEqual([0]);
    } finally {
      await z.close();
    }
    delete process.env.RARGEN_MAX_INFLATE_BYTES;
    const a = (await readNpz(p)).get('a')!;
    expect(a.shape).toEqual([4 << 20]);
    expect((a.data as Uint8Array)[(4 << 20) - 1]).toBe(9);
  });

  it('a flipped byte in a deflated member fails its CRC at the end of the stream', async () => {
    const body = Buffer.concat([encodeNpyHeader('uint8', [1000]), Buffer.alloc(1000, 7)]);
    const zip = buildZip([{ name: 'a.npy', data: body, deflate: true }]);
    const cd = zip.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    zip.writeUInt32LE(zip.readUInt32LE(cd + 16) ^ 1, cd + 16); // the directory's CRC
    const e = await failure(readNpz(put(zip, '.npz')));
    expect(e.message).toContain("zip entry 'a.npy' fails its CRC-32 check");
  });

  it('a member that inflates past its declared size stops at the declared size', async () => {
    const body = Buffer.concat([encodeNpyHeader('uint8', [1000]), Buffer.alloc(1000, 7)]);
    const zip = buildZip([{ name: 'a.npy', data: body, deflate: true }]);
    // declare 200 bytes fewer in both headers
    const lie = body.length - 200;
    zip.writeUInt32LE(lie, 22);
    const cd = zip.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    zip.writeUInt32LE(lie, cd + 24);
    const e = await failure(readNpz(put(zip, '.npz')));
    expect(e.message).toContain(`inflates to more than the ${lie} bytes its header says`);
  });

  it('a pickle memo bomb is refused at the memo cap (10 MB of MEMOIZE: 900 MB before)', () => {
    const count = 1_000_001;
    const data = new Uint8Array(count + 4);
    data.set([0x80, 2, 0x4e]); // PROTO 2, NONE
    data.fill(0x94, 3, 3 + count); // MEMOIZE x count
    data[3 + count] = 0x2e;
    expect(() => unpickle(data, { file: 'f.pt', what: 'bomb', globals: new Map(), allowedHint: '' })).toThrow(
      'pickle memo grows past 1000000 entries, over the limit of 1000000 pickle memo entries (raise it with the environment variable RARGEN_MAX_PICKLE_MEMO)',
    );
    process.env.RARGEN_MAX_PICKLE_MEMO = String(count + 1);
    expect(unpickle(data, { file: 'f.pt', what: 'bomb', globals: new Map(), allowedHint: '' }).value).toBe(null);
  });

  const pngOfSize = (w: number, h: number): Uint8Array => {
    const png = Buffer.from(encodePng(createImage(1, 1)));
    png.writeUInt32BE(w, 16);
    png.writeUInt32BE(h, 20);
    png.writeUInt32BE(tableCrc32(png.subarray(12, 29)), 29);
    return png;
  };

  it('a PNG declaring 20000x20000 (or 2^31-1 square) is refused before decoding, naming the file', async () => {
    for (const [w, h] of [
      [20000, 20000],
      [2 ** 31 - 1, 2 ** 31 - 1],
    ]) {
      const p = put(pngOfSize(w, h), '.png');
      const e = await failure(loadImage(p));
      expect(e.message).toBe(`${p}: PNG declares ${w}x${h} = ${w * h} pixels, over the limit of 178956970 pixels of one decoded image (raise it with the environment variable RARGEN_MAX_IMAGE_PIXELS)`);
    }
    process.env.RARGEN_MAX_IMAGE_PIXELS = String(20000 * 20000);
    // allowed now: the 1x1 image data is then too short for the declared size
    expect((await failure(loadImage(put(pngOfSize(20000, 20000), '.png')))).message).toMatch(/PNG image data is (truncated|corrupt)/);
  });
});

describe('loaded silently although wrong', () => {
  it('npz: a flipped byte in a stored member fails its CRC (as numpy does) on a full read and on an in-order row scan', async () => {
    const p = join(dir, 'crc.npz');
    await writeNpz(p, { arr_0: { dtype: 'uint8', shape: [4, 8], data: Uint8Array.from({ length: 32 }, (_, i) => i) } });
    const b = readFileSync(p);
    const at = b.indexOf(Buffer.from([10, 11, 12, 13]));
    b[at] ^= 0x40;
    const bad = put(b, '.npz');
    expect((await failure(readNpz(bad))).message).toContain("zip entry 'arr_0.npy' fails its CRC-32 check");
    const z = await openNpz(bad);
    try {
      await z.readRows('arr_0', 0, 2);
      await z.readRows('arr_0', 2, 3);
      expect((await failure(z.readRows('arr_0', 3, 4))).message).toContain('fails its CRC-32 check');
      // and stays failed for any later read of the member
      expect((await failure(z.readRows('arr_0', 0, 1))).message).toContain('fails its CRC-32 check');
    } finally {
      await z.close();
    }
    // the intact archive reads through without complaint
    expect(Array.from((await readNpz(p)).get('arr_0')!.data as Uint8Array)).toEqual(Array.from({ length: 32 }, (_, i) => i));
  });

  it('npz: every member of the central directory is read even when the end record counts fewer (as Python zipfile)', async () => {
    const p = join(dir, 'count.npz');
    await writeNpz(p, { a: { dtype: 'int32', shape: [1], data: Int32Array.of(5) }, b: { dtype: 'int32', shape: [1], data: Int32Array.of(6) } });
    const b = readFileSync(p);
    const eocd = b.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    b.writeUInt16LE(1, eocd + 8);
    b.writeUInt16LE(1, eocd + 10);
    const m = await readNpz(put(b, '.npz'));
    expect([...m.keys()]).toEqual(['a', 'b']);
    expect(Array.from(m.get('b')!.data as Int32Array)).toEqual([6]);
  });

  it("npz: members 'x' and 'x.npy' together are ambiguous", async () => {
    const body = Buffer.concat([encodeNpyHeader('uint8', [1]), Buffer.from([1])]);
    const p = put(buildZip([{ name: 'x', data: body }, { name: 'x.npy', data: body }]), '.npz');
    expect((await failure(readNpz(p))).message).toContain("zip entries 'x' and 'x.npy' both name the array 'x'");
  });

  it('.npy <U: interior NULs are kept and only trailing ones stripped (as numpy); code points above U+10FFFF are refused', async () => {
    const p = join(dir, 'u.npy');
    await writeNpy(p, { dtype: 'unicode', shape: [3], data: ['a\0b', 'c', '\0d\0'] });
    expect((await readNpy(p)).data).toEqual(['a\0b', 'c', '\0d']);
    const b = readFileSync(p);
    const hdr = encodeNpyHeader('unicode', [3], 3).length;
    b.writeUInt32LE(0x110000, hdr + 4); // element 0, character 1
    const e = await failure(readNpy(put(b, '.npy')));
    expect(e.message).toContain('element 0 holds code point 0x110000, above U+10FFFF');
  });

  const st = (header: object, data: number): string => {
    const h = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    return put(Buffer.concat([len, h, Buffer.alloc(data)]), '.safetensors');
  };
  const t = (a: number, b: number, shape = [(b - a) / 4]) => ({ dtype: 'F32', shape, data_offsets: [a, b] });

  it('safetensors: overlapping, gapped, trailing data and duplicate keys are refused (as the spec and the reference crate)', async () => {
    expect(Array.from((await readAllTensors(st({ a: t(0, 8), b: t(8, 16) }, 16))).get('b')!)).toEqual([0, 0]);
    expect((await failure(readAllTensors(st({ a: t(0, 8), b: t(4, 12) }, 12)))).message).toContain("tensor 'b': data_offsets [4, 12] overlap tensor 'a' (which ends at 8)");
    expect((await failure(readAllTensors(st({ a: t(0, 8), b: t(12, 20) }, 20)))).message).toContain("tensor 'b': data_offsets [12, 20] leave a gap of 4 bytes after tensor 'a'");
    expect((await failure(readAllTensors(st({ a: t(4, 12) }, 12)))).message).toContain('leave a gap of 4 bytes after the header');
    expect((await failure(readAllTensors(st({ a: t(0, 8) }, 12)))).message).toContain('(4 trailing bytes)');
    // duplicate key: JSON.parse would keep the second silently
    const h = Buffer.from('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    const dup = put(Buffer.concat([len, h, Buffer.alloc(16)]), '.safetensors');
    expect((await failure(readAllTensors(dup))).message).toContain('safetensors header is not valid JSON: duplicate key "a"');
  });

  it('safetensors: __metadata__ must map strings to strings', async () => {
    expect((await failure(readAllTensors(st({ __metadata__: { format: 'pt', step: 3 }, a: t(0, 8) }, 8)))).message).toContain('safetensors __metadata__ must be an object of string values');
    expect((await readAllTensors(st({ __metadata__: { format: 'pt' }, a: t(0, 8) }, 8))).size).toBe(1);
  });

  it('safetensors: a shape of [4.0] is not an integer shape', async () => {
    const h = Buffer.from('{"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}}');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    const e = await failure(readAllTensors(put(Buffer.concat([len, h, Buffer.alloc(16)]), '.safetensors')));
    expect(e.message).toContain("tensor 'a': bad shape (4.0): sizes must be non-negative integers");
  });

  it('torch: a tensor size pickled as the float 4.0 is not a size (torch refuses it too)', async () => {
    const binfloat = (v: number) => {
      const b = Buffer.alloc(9);
      b[0] = 0x47;
      b.writeDoubleBE(v, 1);
      return b;
    };
    const pid = cat(op.mark, op.str('storage'), op.global('torch', 'FloatStorage'), op.str('0'), op.str('cpu'), op.int(4), op.tuple, op.binpersid);
    const tensor = (size: Uint8Array) =>
      cat(op.global('torch._utils', '_rebuild_tensor_v2'), op.mark, pid, op.int(0), op.mark, size, op.tuple, op.mark, op.int(1), op.tuple, op.false_, op.global('collections', 'OrderedDict'), op.emptyTuple, op.reduce, op.tuple, op.reduce);
    const file = (size: Uint8Array) =>
      put(buildZip([{ name: 'a/data.pkl', data: cat(op.proto(2), op.global('collections', 'OrderedDict'), op.emptyTuple, op.reduce, op.str('w'), tensor(size), op.setitem, op.stop) }, { name: 'a/data/0', data: new Uint8Array(16) }]), '.pt');
    expect((await readAllTensors(file(cat(op.int(4))))).get('w')!.length).toBe(4);
    const e = await failure(readAllTensors(file(binfloat(4))));
    expect(e.message).toContain("tensor 'w': bad shape (4.0): sizes must be non-negative integers");
  });

  it('the strict header parser agrees with JSON.parse on ordinary headers', async () => {
    const { parseHeaderJson } = await import('../../lib/io/safetensors.js');
    const text = '{"__metadata__":{"format":"pt","k":"v \\"q\\" \\u00e9"},"x.w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}, "e" : [] }';
    expect(parseHeaderJson(text)).toEqual(JSON.parse(text));
    expect(() => parseHeaderJson('[' .repeat(100) + ']'.repeat(100))).toThrow('nesting too deep');
    expect(() => parseHeaderJson('{"a":1} x')).toThrow('trailing characters');
  });
});

describe('the caps are documented', () => {
  it("README's Limits section lists every cap's variable", () => {
    const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Limits'), readme.indexOf('\n## ', readme.indexOf('## Limits') + 5));
    for (const l of Object.values(LIMITS)) expect(section).toContain(`\`${l.env}\``);
  });
});
