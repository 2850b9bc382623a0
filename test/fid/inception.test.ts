// The TF1-exact FID InceptionV3 against torch-fidelity's FeatureExtractorInceptionV3
// on the fixture formula weights (test/fixtures/inception/inception.npz): the resize,
// pool3, the sFID spatial features and the IS logits, for 256x256 and 64x64 inputs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadInception, tf1ResizeBilinear, type InceptionV3 } from '../../lib/inception.js';
import { inceptionParamTable, validateInceptionWeights, WeightsMismatchError } from '../../lib/config.js';
import { native } from '../../lib/native.js';
import type { TensorInfo } from '../../lib/tensor.js';
import { tempDir } from '../helpers/tmp.js';
import { FIXTURES, formulaWeightsFile, inceptionFixture, maxAbsDiff, relErr, requireEvalBinding } from './helpers.js';

const tmp = tempDir('fid-inception');
let net: InceptionV3;

beforeAll(async () => {
  requireEvalBinding();
  net = await loadInception(await formulaWeightsFile(tmp), { device: 'cpu' });
});
afterAll(() => net?.dispose());

describe('InceptionV3 (FID extractor)', () => {
  it('takes exactly the keys and shapes of pt_inception-2015-12-05-6726825d.pth', () => {
    const want = JSON.parse(readFileSync(join(FIXTURES, 'inception_shapes.json'), 'utf8')) as Record<string, number[]>;
    const got = Object.fromEntries(inceptionParamTable().map((e) => [e.name, e.shape]));
    const wantNoCounters = Object.fromEntries(Object.entries(want).filter(([k]) => !k.endsWith('num_batches_tracked')));
    expect(got).toEqual(wantNoCounters);
  });

  it('has one parameter table: 94 BasicConv2d (conv, 4 BatchNorm tensors) and fc, in state-dict order', () => {
    const t = inceptionParamTable();
    expect(t.length).toBe(94 * 5 + 2);
    expect(t.slice(0, 5).map((p) => [p.name, p.kind, p.init, p.shape])).toEqual([
      ['Conv2d_1a_3x3.conv.weight', 'conv', 'trunc_normal', [32, 3, 3, 3]],
      ['Conv2d_1a_3x3.bn.weight', 'norm_weight', 'ones', [32]],
      ['Conv2d_1a_3x3.bn.bias', 'norm_bias', 'zeros', [32]],
      ['Conv2d_1a_3x3.bn.running_mean', 'norm_stat', 'zeros', [32]],
      ['Conv2d_1a_3x3.bn.running_var', 'norm_stat', 'ones', [32]],
    ]);
    expect(t.slice(-2).map((p) => [p.name, p.kind, p.shape])).toEqual([
      ['fc.weight', 'linear', [1008, 2048]],
      ['fc.bias', 'bias', [1008]],
    ]);
    // module order: Mixed_6e before Mixed_7a, E's branches as torchvision declares them
    const names = t.map((p) => p.name);
    expect(names.indexOf('Mixed_6e.branch_pool.conv.weight')).toBeLessThan(names.indexOf('Mixed_7a.branch3x3_1.conv.weight'));
    expect(names.filter((n) => n.startsWith('Mixed_7c.') && n.endsWith('.conv.weight'))).toEqual(
      ['branch1x1', 'branch3x3_1', 'branch3x3_2a', 'branch3x3_2b', 'branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3a', 'branch3x3dbl_3b', 'branch_pool'].map((b) => `Mixed_7c.${b}.conv.weight`),
    );
  });

  it('names every wrong, missing and unexpected tensor of a checkpoint with what the table expects', () => {
    const tensors = new Map<string, TensorInfo>(inceptionParamTable().map((p) => [p.name, { name: p.name, dtype: 'float32', shape: p.shape, numel: 0 }]));
    tensors.set('Conv2d_1a_3x3.bn.num_batches_tracked', { name: '', dtype: 'int64', shape: [], numel: 1 }); // allowed: a counter
    expect(() => validateInceptionWeights(tensors)).not.toThrow();
    tensors.set('Mixed_6d.branch1x1.conv.weight', { name: '', dtype: 'float32', shape: [192, 768, 3, 3], numel: 0 });
    tensors.set('fc.weight', { name: '', dtype: 'int64', shape: [1008, 2048], numel: 0 });
    tensors.delete('fc.bias');
    tensors.set('Mixed_9x.bn.num_batches_tracked', { name: '', dtype: 'int64', shape: [], numel: 1 }); // no such BatchNorm
    let err: unknown;
    try {
      validateInceptionWeights(tensors);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(WeightsMismatchError);
    const msg = (err as Error).message;
    expect(msg).toContain('FID InceptionV3 weights do not match the expected state dict (4 problems)');
    expect(msg).toContain('Mixed_6d.branch1x1.conv.weight: expected (192, 768, 1, 1) but found (192, 768, 3, 3)');
    expect(msg).toContain('fc.weight: expected a floating-point tensor but found int64');
    expect(msg).toContain('missing keys (1): fc.bias');
    expect(msg).toContain('unexpected keys (1): Mixed_9x.bn.num_batches_tracked');
  });

  it('the native model refuses keys and shapes outside the table, naming them', () => {
    const n = native();
    const h = n.inceptionCreate('cpu', 1);
    try {
      expect(() => n.inceptionSetWeight(h, 'fc.weight', new Float32Array(1008 * 4), [1008, 4])).toThrow('rargen.inceptionSetWeight: inception: weight fc.weight: expected shape (1008, 2048) but received (1008, 4)');
      expect(() => n.inceptionSetWeight(h, 'Mixed_5b.branch1x1.bn.running_var', new Float32Array(32), [32])).toThrow('weight Mixed_5b.branch1x1.bn.running_var: expected shape (64,) but received (32,)');
      expect(() => n.inceptionSetWeight(h, 'Conv2d_1a_3x3.bn.num_batches_tracked', new Float32Array(1), [1])).toThrow('unexpected weight Conv2d_1a_3x3.bn.num_batches_tracked (not a key of pt_inception-2015-12-05-6726825d.pth)');
      n.inceptionSetWeight(h, 'fc.bias', new Float32Array(1008), [1008]);
      expect(() => n.inceptionFinalize(h)).toThrow('rargen.inceptionFinalize: inception: 471 missing weights: Conv2d_1a_3x3.conv.weight, Conv2d_1a_3x3.bn.weight,');
    } finally {
      n.inceptionFree(h);
    }
  });

  it('resizes as TF1 tf.image.resize_bilinear (no half-pixel centres)', async () => {
    const f = await inceptionFixture();
    const images = f.get('images256')!.data as Uint8Array;
    const resized = tf1ResizeBilinear(images, 3, 256, 256);
    const want = f.get('resized256_0')!.data as Float32Array;
    const got = resized.subarray(0, 3 * 299 * 299);
    const d = maxAbsDiff(got, want);
    console.log(`resized256_0: max abs diff ${d}`);
    expect(d).toBe(0); // the same float32 arithmetic: exact
  });

  // Relative to the max |value|, measured 7.0e-7 / 1.2e-6 (pool3, 256 / 64 px), 2.9e-6 /
  // 2.8e-6 (spatial), 9.2e-7 / 7.9e-7 (logits): bounds about 3x.
  const FEATURE_BOUND = { pool3: 3.5e-6, spatial: 9e-6, logits: 3e-6 } as const;
  for (const size of [256, 64]) {
    it(`pool3, spatial and logits match torch-fidelity for ${size}x${size} images`, async () => {
      const f = await inceptionFixture();
      const img = f.get(`images${size}`)!;
      const B = img.shape[0]!;
      const out = await net.features(img.data as Uint8Array, B, size, size);
      expect(out.pool3.length).toBe(B * 2048);
      expect(out.spatial.length).toBe(B * 2023);
      expect(out.logits.length).toBe(B * 1008);
      for (const [name, got] of [
        ['pool3', out.pool3],
        ['spatial', out.spatial],
        ['logits', out.logits],
      ] as const) {
        const want = f.get(`${name}_${size}`)!.data as Float32Array;
        const e = relErr(got, want);
        console.log(`${name}_${size}: max abs error / max abs = ${e.toExponential(2)}`);
        expect(e, `${name}_${size}`).toBeLessThanOrEqual(FEATURE_BOUND[name]);
      }
    });
  }

  it('gives the same features one image at a time as in a batch', async () => {
    const f = await inceptionFixture();
    const img = f.get('images64')!.data as Uint8Array;
    const both = await net.features(img, 2, 64, 64);
    const second = await net.features(img.subarray(64 * 64 * 3), 1, 64, 64);
    console.log(`one vs batch pool3 rel ${relErr(second.pool3, both.pool3.subarray(2048)).toExponential(3)}`);
    expect(relErr(second.pool3, both.pool3.subarray(2048))).toBe(0); // images are independent: exact
  });

  it('rejects bad image buffers with the expected size', async () => {
    expect(() => net.features(new Uint8Array(10), 1, 64, 64)).toThrow('Expected 12288 bytes (1 x 64 x 64 x 3) for images');
    expect(() => net.features(new Float32Array(12288) as unknown as Uint8Array, 1, 64, 64)).toThrow('Expected a Uint8Array');
    expect(() => net.features(new Uint8Array(12288), 0, 64, 64)).toThrow('for batch');
  });
});
