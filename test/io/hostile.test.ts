// A corpus of broken and hostile inputs, generated here: every one must be rejected
// with a RargenIOError whose message names the file and the offending thing, and
// nothing may crash or hang (vitest's timeout guards the latter).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint, openSafetensors, openNpz, readNpy, readNpz, saveSafetensors, saveTorch, writeNpy, writeNpz, RargenIOError } from '../../lib/io/index.js';
import type { HostTensor } from '../../lib/tensor.js';
import { cat, legacyFile, op, stateDictPickle, type TensorSpec } from '../helpers/pickle.js';
import { buildZip } from '../helpers/zip.js';
import { npyHeader } from '../helpers/npy.js';
import { tempDir } from '../helpers/tmp.js';

const FIX = join(import.meta.dirname, '..', 'fixtures');
const dir = tempDir('io-hostile');
let n = 0;
const put = (bytes: Uint8Array, ext = '.bin'): string => {
  const p = join(dir, `case${n++}${ext}`);
  writeFileSync(p, bytes);
  return p;
};

/** Open and read every tensor; the error (if any) must be a RargenIOError naming the file. */
async function loadAll(p: string): Promise<void> {
  const ck = await openCheckpoint(p);
  try {
    for (const k of ck.tensors.keys()) await ck.read(k);
  } finally {
    await ck.close();
  }
}

async function rejects(p: string, re: RegExp, load: (p: string) => Promise<unknown> = loadAll): Promise<void> {
  let err: unknown = null;
  try {
    await load(p);
  } catch (e) {
    err = e;
  }
  expect(err, `${p} should be rejected`).toBeInstanceOf(RargenIOError);
  const msg = (err as Error).message;
  expect(msg).toMatch(/^rargen: /);
  expect(msg).toContain(p);
  expect(msg).toMatch(re);
}

const small = (): Map<string, HostTensor> =>
  new Map<string, HostTensor>([
    ['a.weight', { dtype: 'float32', shape: [4, 5], data: Float32Array.from({ length: 20 }, (_, i) => i) }],
    ['a.bias', { dtype: 'float16', shape: [5], data: new Uint16Array(5).fill(0x3c00) }],
    ['step', { dtype: 'int64', shape: [], data: BigInt64Array.from([3n]) }],
  ]);

function cutPoints(size: number): number[] {
  const pts = new Set<number>([0, 1, 2, 3, 4, 7, 8, 9, 16, 21, 22, 23, 64, 100]);
  for (let i = 1; i < 40; i++) pts.add(Math.floor((size * i) / 40));
  for (let i = 1; i <= 30; i++) pts.add(size - i);
  return [...pts].filter((x) => x >= 0 && x < size).sort((a, b) => a - b);
}

describe('truncated files at many cut points', () => {
  it('torch zip (the rar-tiny fixture)', async () => {
    const full = readFileSync(join(FIX, 'rar-tiny/model.bin'));
    for (const cut of cutPoints(full.length)) {
      await rejects(put(full.subarray(0, cut)), /truncated|end-of-central-directory|unrecognised checkpoint format|outside the file|too short/);
    }
  });

  it('torch legacy', async () => {
    const specs: [string, TensorSpec][] = [['w', { storageType: 'FloatStorage', key: '0', storageNumel: 8, offset: 0, shape: [2, 4], stride: [4, 1], legacy: true }]];
    const full = legacyFile(stateDictPickle(specs), [{ key: '0', elemSize: 4, bytes: new Uint8Array(32).fill(1) }]);
    for (const cut of cutPoints(full.length)) await rejects(put(full.subarray(0, cut)), /truncated|ends early|unrecognised checkpoint format|outside the file/);
  });

  it('safetensors', async () => {
    const p = join(dir, 'ok.safetensors');
    await saveSafetensors(p, small());
    const full = readFileSync(p);
    for (const cut of cutPoints(full.length)) {
      await rejects(put(full.subarray(0, cut)), /truncated|header length .* larger than the file|unrecognised checkpoint format|not valid JSON|too short/);
    }
  });

  it('npz and npy', async () => {
    const p = join(dir, 'ok.npz');
    await writeNpz(p, { x: { dtype: 'float32', shape: [10, 3], data: new Float32Array(30) }, names: { dtype: 'unicode', shape: [2], data: ['a', 'bc'] } });
    const full = readFileSync(p);
    for (const cut of cutPoints(full.length)) await rejects(put(full.subarray(0, cut), '.npz'), /truncated|end-of-central-directory|outside the file|not a zip/, readNpz);
    const q = join(dir, 'ok.npy');
    await writeNpy(q, { dtype: 'int64', shape: [4, 2], data: new BigInt64Array(8) });
    const f2 = readFileSync(q);
    for (const cut of cutPoints(f2.length)) await rejects(put(f2.subarray(0, cut), '.npy'), /truncated|bad magic|not a \.npy/, readNpy);
  });
});

describe('zip structure damage', () => {
  it('bad central directory offsets and counts', async () => {
    const p0 = join(dir, 'base.bin');
    await saveTorch(p0, small());
    const base = readFileSync(p0);
    const eocd = base.length - 22;
    const patch = (off: number, v: number, width: 2 | 4): Buffer => {
      const b = Buffer.from(base);
      if (width === 4) b.writeUInt32LE(v, off);
      else b.writeUInt16LE(v, off);
      return b;
    };
    await rejects(put(patch(eocd + 16, base.length + 1000, 4)), /central directory at offset \d+ .* lies outside the file/);
    await rejects(put(patch(eocd + 16, 0, 4)), /central directory entry 0 at offset 0 has a bad signature/);
    await rejects(put(patch(eocd + 16, 100, 4)), /central directory/);
    await rejects(put(patch(eocd + 12, 0xfffffff0, 4)), /needs zip64 fields|lies outside the file/);
    await rejects(put(patch(eocd + 10, 60000, 2)), /cannot hold the 60000 entries/);
    // a local header offset that points at garbage
    const cd = base.readUInt32LE(eocd + 16);
    const b = Buffer.from(base);
    b.writeUInt32LE(7, cd + 42); // first entry (data.pkl) local header at offset 7
    await rejects(put(b), /zip entry 'archive\/data.pkl': no local file header at offset 7/);
  });

  it('wrong magic, empty and random files, missing files and folders', async () => {
    await rejects(join(dir, 'does-not-exist.bin'), /cannot open: ENOENT/);
    await rejects(dir, /not a regular file|cannot open/);
    await rejects(join(dir, 'nope.npz'), /cannot open: ENOENT/, readNpz);
    await rejects(put(new Uint8Array(0)), /unrecognised checkpoint format \(first bytes: none, the file is empty\)/);
    await rejects(put(Buffer.from('hello world, not a checkpoint')), /unrecognised checkpoint format \(first bytes: 68 65 6c 6c 6f/);
    await rejects(put(Uint8Array.from([0x80, 0x02, 0x4b, 0x05, 0x2e])), /not a torch checkpoint: the first pickle holds number 5, not the legacy magic number/);
    await rejects(put(buildZip([{ name: 'foo/bar.txt', data: Buffer.from('x') }])), /no '<archive>\/data.pkl' zip entry; not a torch.save checkpoint \(entries: foo\/bar.txt\)/);
    // an npz is a zip, but not a checkpoint
    await rejects(join(FIX, 'rar-tiny/decode.npz'), /no '<archive>\/data.pkl' zip entry/);
  });

  it('compressed storage entries and CRC damage in data.pkl', async () => {
    const specs: [string, TensorSpec][] = [['w', { storageType: 'FloatStorage', key: '0', storageNumel: 4, offset: 0, shape: [4], stride: [1] }]];
    const pkl = stateDictPickle(specs);
    await rejects(
      put(buildZip([{ name: 'a/data.pkl', data: pkl }, { name: 'a/data/0', data: new Uint8Array(16), deflate: true }])),
      /tensor 'w': zip entry 'a\/data\/0' is compressed \(method 8\)/,
    );
    const z = buildZip([{ name: 'a/data.pkl', data: pkl }, { name: 'a/data/0', data: new Uint8Array(16) }]);
    z[30 + 'a/data.pkl'.length + 5] ^= 0xff; // flip a byte inside data.pkl
    await rejects(put(z), /zip entry 'a\/data.pkl' fails its CRC-32 check|zip entry 'a\/data.pkl': pickle/);
  });
});

describe('hostile pickles inside torch files', () => {
  const zipWith = (pkl: Uint8Array, storages: [string, Uint8Array][] = [['0', new Uint8Array(64)]]) =>
    put(buildZip([{ name: 'archive/data.pkl', data: pkl }, ...storages.map(([k, d]) => ({ name: `archive/data/${k}`, data: d }))]));
  const tensor = (o: Partial<TensorSpec>): [string, TensorSpec][] => [['evil.weight', { storageType: 'FloatStorage', key: '0', storageNumel: 16, offset: 0, shape: [4, 4], stride: [4, 1], ...o }]];

  it.each([
    ['os', 'system'],
    ['posix', 'system'],
    ['builtins', 'eval'],
    ['torch.storage', '_load_from_bytes'],
  ])('forbidden global %s.%s', async (m, name) => {
    const pkl = cat(op.proto(2), op.global(m, name), op.str('touch /tmp/pwned'), op.tuple1, op.reduce, op.stop);
    const re = new RegExp(`refusing to load .*: pickle global '${m}\\.${name}'.*is not allowed \\(only tensor and OrderedDict globals are\\)`);
    await rejects(zipWith(pkl), re);
    // the same inside a legacy file's main pickle
    await rejects(put(legacyFile(pkl, [])), re);
  });

  it('torch.storage._load_from_bytes says why', async () => {
    const pkl = cat(op.proto(2), op.global('torch.storage', '_load_from_bytes'), op.stop);
    await rejects(zipWith(pkl), /'torch.storage._load_from_bytes' \(it would run torch.load on embedded bytes\) is not allowed/);
  });

  it('a storage shorter than its tensor', async () => {
    // offset + numel*stride beyond the declared storage
    await rejects(zipWith(stateDictPickle(tensor({ offset: 4 }))), /tensor 'evil.weight': shape \(4, 4\) stride \(4, 1\) at storage offset 4 needs 20 elements, but its storage '0' \(float32\) has only 16/);
    await rejects(zipWith(stateDictPickle(tensor({ stride: [5, 1] }))), /tensor 'evil.weight': .* needs 19 elements, but its storage '0'/);
    // the declared storage is bigger than the bytes in the file
    await rejects(zipWith(stateDictPickle(tensor({ storageNumel: 1000 }))), /tensor 'evil.weight': storage '0' declares 1000 float32 elements \(4000 bytes\) but zip entry 'archive\/data\/0' holds only 64 bytes/);
    // missing storage entry
    await rejects(zipWith(stateDictPickle(tensor({ key: '9' }))), /tensor 'evil.weight': its storage '9' has no zip entry 'archive\/data\/9'/);
    // legacy: storage header count beyond the file
    const h = Buffer.alloc(8);
    h.writeBigInt64LE(1n << 40n);
    const leg = legacyFile(stateDictPickle(tensor({ legacy: true })), []);
    const keys = cat(op.proto(2), op.emptyList, op.str('0'), op.append, op.stop);
    await rejects(put(cat(leg.subarray(0, leg.length - 4), keys.subarray(0), h)), /legacy storage-keys|legacy storage '0'|bad element count/);
  });

  it('negative, huge and malformed shapes', async () => {
    await rejects(zipWith(stateDictPickle(tensor({ shape: [-1, 4] }))), /tensor 'evil.weight': bad shape \(-1, 4\)/);
    await rejects(zipWith(stateDictPickle(tensor({ shape: [2 ** 20, 2 ** 20], stride: [2 ** 20, 1] }))), /tensor 'evil.weight': shape \(1048576, 1048576\) .*needs 1099511627776 elements, but its storage '0'/);
    await rejects(zipWith(stateDictPickle(tensor({ shape: [2 ** 40, 2 ** 40, 2 ** 40], stride: [1, 1, 1] }))), /tensor 'evil.weight': shape .* has too many elements/);
    await rejects(zipWith(stateDictPickle(tensor({ stride: [-4, 1] }))), /tensor 'evil.weight': bad stride \(-4, 1\)/);
    await rejects(zipWith(stateDictPickle(tensor({ offset: -1 }))), /tensor 'evil.weight': bad storage offset -1/);
    await rejects(zipWith(stateDictPickle(tensor({ stride: [4] }))), /tensor 'evil.weight': stride has 1 entries but shape \(4, 4\) has 2/);
    await rejects(zipWith(stateDictPickle(tensor({ storageType: 'DoubleStorage' }))), /tensor 'evil.weight' has dtype float64, which rargen does not load/);
  });

  it('not a state dict', async () => {
    await rejects(zipWith(cat(op.proto(2), op.emptyList, op.stop)), /holds a list of 0, not a state dict/);
    await rejects(zipWith(cat(op.proto(2), op.emptyDict, op.str('epoch'), op.int(3), op.setitem, op.stop)), /a dict \(keys 'epoch'\) that is neither a dict of tensors nor holds one under 'state_dict', 'model' or 'module'/);
    const two = cat(op.proto(2), op.emptyDict, op.str('model'), stateDictPickle(tensor({})).subarray(2, -1), op.setitem, op.str('state_dict'), stateDictPickle(tensor({})).subarray(2, -1), op.setitem, op.stop);
    await rejects(zipWith(two), /several state dicts \('state_dict', 'model'\)/);
  });

  it('deeply nested and oversized pickles', async () => {
    const depth = 100_000;
    const deep = cat(op.proto(2), new Uint8Array(depth).fill(0x5d), new Uint8Array(depth - 1).fill(0x61), op.stop);
    await rejects(zipWith(deep), /not a state dict/);
    const tuples = cat(op.proto(2), op.emptyTuple, ...Array.from({ length: 50_000 }, () => op.tuple1), op.stop);
    await rejects(zipWith(tuples), /holds a tuple of 1, not a state dict/);
    await rejects(zipWith(cat(op.proto(2), op.strHeader(0xffffffff), op.stop)), /BINUNICODE at offset 2: pickle data ends early/);
    await rejects(zipWith(cat(op.proto(2), [0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], op.stop)), /BINUNICODE8 .*ends early/);
    await rejects(zipWith(cat(op.proto(2), op.binget(9), op.stop)), /zip entry 'archive\/data.pkl': pickle opcode BINGET at offset 2: memo key 9 is not defined/);
    // persistent id that is not a storage
    await rejects(zipWith(cat(op.proto(2), op.str('module'), op.binpersid, op.stop)), /persistent id is a str 'module', not a tuple/);
  });

  it('random byte flips in a small checkpoint never escape as anything but RargenIOError', async () => {
    const p0 = join(dir, 'fuzzbase.bin');
    await saveTorch(p0, small());
    const base = readFileSync(p0);
    let s = 12345;
    const rnd = (k: number): number => {
      s = (s * 1103515245 + 12345) >>> 0;
      return s % k;
    };
    let rejected = 0;
    for (let i = 0; i < 300; i++) {
      const b = Buffer.from(base);
      // flips focused on the pickle and the headers, where they matter most
      const region = rnd(3) === 0 ? b.length : Math.min(b.length, 1400);
      for (let k = 0; k < 1 + rnd(4); k++) b[rnd(region)] ^= 1 << rnd(8);
      const p = put(b);
      try {
        await loadAll(p);
      } catch (e) {
        expect(e, (e as Error).stack).toBeInstanceOf(RargenIOError);
        expect((e as Error).message).toContain(p);
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(50);
  });
});

describe('broken safetensors and npy/npz headers', () => {
  const st = (header: unknown, data = new Uint8Array(16)): string => {
    const h = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    return put(cat(len, h, data), '.safetensors');
  };

  it('safetensors', async () => {
    await rejects(st({ w: { dtype: 'F64', shape: [2], data_offsets: [0, 16] } }), /tensor 'w' has dtype "F64", which rargen does not load/);
    await rejects(st({ w: { dtype: 'F32', shape: [5], data_offsets: [0, 16] } }), /tensor 'w': shape \(5,\) float32 needs 20 bytes but data_offsets \[0, 16\] give 16|needs 5 elements/);
    await rejects(st({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 99] } }), /tensor 'w': data_offsets \[0, 99\] run past the end of the data \(16 bytes\)/);
    await rejects(st({ w: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }), /tensor 'w': bad shape/);
    await rejects(st({ w: { dtype: 'F32', shape: [4], data_offsets: [8, 4] } }), /tensor 'w': bad data_offsets \[8,4\]/);
    await rejects(st([1, 2]), /unrecognised checkpoint format/); // not sniffed as safetensors at all
    await rejects(st([1, 2]), /safetensors header is not a JSON object/, async (p) => (await openSafetensors(p)).close());
    const bad = Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a":')]);
    await rejects(put(bad, '.safetensors'), /safetensors header is not valid JSON/);
  });

  const npyWith = (dict: string, data = new Uint8Array(64)): Uint8Array => cat(npyHeader(dict), data);

  it.each([
    ["{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", /unsupported \.npy dtype '<c16'/],
    ["{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", /descr is a structured dtype/],
    ["{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", /Fortran-order array of shape \(2, 3\) is not supported/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", /bad \.npy shape/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }", /needs 4000 data bytes but only 64 are present; the array is truncated/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (4,) ", /cannot parse the \.npy header/],
    ["__import__('os').system('x')", /cannot parse the \.npy header/],
    ["{'descr': '<f4', 'shape': (4,), }", /no boolean 'fortran_order'/],
    ["{'a': " + '['.repeat(40) + ']'.repeat(40) + '}', /nesting too deep/],
  ])('npy header %s', async (dict, re) => {
    await rejects(put(npyWith(dict), '.npy'), re, readNpy);
    // and inside an npz, where the message names the member
    const z = put(buildZip([{ name: 'bad.npy', data: npyWith(dict) }]), '.npz');
    await rejects(z, new RegExp(`zip entry 'bad.npy'.*${re.source}`), readNpz);
  });

  it('npz member that is not an npy, and missing arrays', async () => {
    const z = put(buildZip([{ name: 'x.npy', data: Buffer.from('PK not numpy at all') }]), '.npz');
    await rejects(z, /zip entry 'x.npy': not a \.npy array \(bad magic/, readNpz);
    await rejects(join(FIX, 'rar-tiny/decode.npz'), /no array 'nope' in the archive \(it has input_ids, condition/, async (p) => {
      const f = await openNpz(p);
      try {
        return await f.read('nope');
      } finally {
        await f.close();
      }
    });
  });
});
