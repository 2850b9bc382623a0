// The legacy (pre-1.6) torch.save format and hand-built zip checkpoints: files are
// assembled byte by byte here (test/helpers/pickle.ts), exercising shared storages,
// storage offsets, non-contiguous tensors, nested state dicts and byte order.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint, float32ToFloat16 } from '../../lib/io/index.js';
import { cat, legacyFile, op, stateDictPickle, intTuple, type TensorSpec } from '../helpers/pickle.js';
import { buildZip } from '../helpers/zip.js';
import { tempDir } from '../helpers/tmp.js';

const dir = tempDir('io-legacy');

const W = Float32Array.from({ length: 12 }, (_, i) => i + 0.5); // storage '1': 3x4 matrix
const H = float32ToFloat16([1, -0.5, 2048]);
const STEP = BigInt64Array.from([123456789012n]);

function specs(legacy: boolean): [string, TensorSpec][] {
  const f = (o: Partial<TensorSpec>): TensorSpec => ({ storageType: 'FloatStorage', key: '1', storageNumel: 12, offset: 0, shape: [3, 4], stride: [4, 1], legacy, ...o });
  return [
    ['w', f({})],
    ['wT', f({ shape: [4, 3], stride: [1, 4] })], // transposed view of the same storage
    ['row1', f({ offset: 4, shape: [4], stride: [1] })], // storage offset
    ['col2', f({ offset: 2, shape: [3], stride: [4] })], // strided column
    ['bcast', f({ offset: 5, shape: [2, 3], stride: [0, 1] })], // expanded (stride 0)
    ['h', { storageType: 'HalfStorage', key: '2', storageNumel: 3, offset: 0, shape: [3], stride: [1], legacy }],
    ['step', { storageType: 'LongStorage', key: '3', storageNumel: 1, offset: 0, shape: [], stride: [], legacy }],
  ];
}

const storages = [
  { key: '1', elemSize: 4, bytes: new Uint8Array(W.buffer) },
  { key: '2', elemSize: 2, bytes: new Uint8Array(H.buffer) },
  { key: '3', elemSize: 8, bytes: new Uint8Array(STEP.buffer) },
];

async function checkValues(path: string, format: string): Promise<void> {
  const ck = await openCheckpoint(path);
  try {
    expect(ck.format).toBe(format);
    expect([...ck.tensors.keys()]).toEqual(['w', 'wT', 'row1', 'col2', 'bcast', 'h', 'step']);
    expect((await ck.read('w')).data).toEqual(W);
    const wT = await ck.read('wT');
    expect(wT.shape).toEqual([4, 3]);
    expect(wT.data).toEqual(Float32Array.from([0.5, 4.5, 8.5, 1.5, 5.5, 9.5, 2.5, 6.5, 10.5, 3.5, 7.5, 11.5]));
    expect((await ck.read('row1')).data).toEqual(Float32Array.from([4.5, 5.5, 6.5, 7.5]));
    expect(await ck.readFloat32('col2')).toEqual(Float32Array.from([2.5, 6.5, 10.5]));
    expect(await ck.readFloat32('bcast')).toEqual(Float32Array.from([5.5, 6.5, 7.5, 5.5, 6.5, 7.5]));
    expect(await ck.readFloat32('h')).toEqual(Float32Array.from([1, -0.5, 2048]));
    const step = await ck.read('step');
    expect(step.shape).toEqual([]);
    expect(step.data).toEqual(STEP);
    await expect(ck.read('nope')).rejects.toThrow(/no tensor named 'nope'.*it has 7: w, wT/);
  } finally {
    await ck.close();
  }
}

describe('legacy torch.save format', () => {
  it('reads tensors with shared storages, offsets, strides (incl. 0) and several dtypes', async () => {
    const p = join(dir, 'legacy.pt');
    writeFileSync(p, legacyFile(stateDictPickle(specs(true)), storages));
    await checkValues(p, 'torch-legacy');
  });

  it("finds the state dict under 'state_dict' next to other entries", async () => {
    const p = join(dir, 'legacy-nested.pt');
    writeFileSync(p, legacyFile(stateDictPickle(specs(true), 'state_dict'), storages));
    await checkValues(p, 'torch-legacy');
  });

  it('byte-swaps big-endian files', async () => {
    const swap = (b: Uint8Array, k: number): Uint8Array => {
      const o = new Uint8Array(b);
      for (let i = 0; i < o.length; i += k) o.subarray(i, i + k).reverse();
      return o;
    };
    const p = join(dir, 'legacy-be.pt');
    writeFileSync(p, legacyFile(stateDictPickle(specs(true)), storages.map((s) => ({ ...s, bytes: swap(s.bytes, s.elemSize) })), { bigEndian: true }));
    await checkValues(p, 'torch-legacy');
  });

  it('a long main pickle (> the first 1 MB read) is fetched in growing prefixes', async () => {
    const many: [string, TensorSpec][] = [];
    for (let i = 0; i < 12000; i++) many.push([`layer.${i}.some.rather.long.parameter.name.weight`, { storageType: 'FloatStorage', key: '1', storageNumel: 12, offset: i % 12, shape: [1], stride: [1], legacy: true }]);
    const main = stateDictPickle(many);
    expect(main.length).toBeGreaterThan(1 << 20);
    const p = join(dir, 'legacy-long.pt');
    writeFileSync(p, legacyFile(main, storages.slice(0, 1)));
    const ck = await openCheckpoint(p);
    expect(ck.tensors.size).toBe(12000);
    expect((await ck.read('layer.11999.some.rather.long.parameter.name.weight')).data).toEqual(Float32Array.from([11.5]));
    await ck.close();
  });
});

describe('hand-built zip checkpoints', () => {
  const zipMembers = (prefix: string, pkl: Uint8Array) => [
    { name: `${prefix}/data.pkl`, data: pkl },
    ...storages.map((s) => ({ name: `${prefix}/data/${s.key}`, data: s.bytes })),
    { name: `${prefix}/version`, data: Buffer.from('3\n') },
  ];

  it('any archive folder name; shared storages, offsets and strides as in the legacy test', async () => {
    const p = join(dir, 'my_model.pth');
    writeFileSync(p, buildZip(zipMembers('my_model', stateDictPickle(specs(false)))));
    await checkValues(p, 'torch-zip');
  });

  it("{'model': state_dict, 'epoch': 7} and torch 2.x-style protocol 4 pickles (FRAME, MEMOIZE, STACK_GLOBAL, _rebuild_parameter)", async () => {
    const p = join(dir, 'wrapped.pt');
    writeFileSync(p, buildZip(zipMembers('archive', stateDictPickle(specs(false), 'model'))));
    await checkValues(p, 'torch-zip');
    // protocol 4: {'w': Parameter(tensor)} built with STACK_GLOBAL and MEMOIZE
    const sg = (m: string, n: string) => cat(op.shortStr(m), op.memoize, op.shortStr(n), op.memoize, op.stackGlobal, op.memoize);
    const body = cat(
      op.emptyDict,
      op.memoize,
      op.shortStr('w'),
      sg('torch._utils', '_rebuild_parameter'),
      sg('torch._utils', '_rebuild_tensor_v2'),
      op.mark,
      op.mark,
      op.shortStr('storage'),
      sg('torch', 'FloatStorage'),
      op.shortStr('1'),
      op.shortStr('cpu'),
      op.int(12),
      op.tuple,
      op.binpersid,
      op.int(4),
      intTuple([2]),
      intTuple([1]),
      op.false_,
      sg('collections', 'OrderedDict'),
      op.emptyTuple,
      op.reduce,
      op.tuple,
      op.reduce,
      op.true_,
      op.longBinget(12), // the OrderedDict class memoized above (MEMOIZE index 12)
      op.emptyTuple,
      op.reduce,
      op.tuple3,
      op.reduce,
      op.setitem,
    );
    const frameLen = Buffer.alloc(8);
    frameLen.writeBigUInt64LE(BigInt(body.length + 1));
    const pkl = cat(op.proto(4), [0x95], frameLen, body, op.stop);
    const p4 = join(dir, 'proto4.pt');
    writeFileSync(p4, buildZip(zipMembers('archive', pkl)));
    const ck = await openCheckpoint(p4);
    expect((await ck.read('w')).data).toEqual(Float32Array.from([4.5, 5.5]));
    await ck.close();
  });
});
