// The TF1-exact FID InceptionV3 against torch-fidelity's FeatureExtractorInceptionV3
// on the fixture formula weights (test/fixtures/inception/inception.npz): the resize,
// pool3, the sFID spatial features and the IS logits, for 256x256 and 64x64 inputs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadInception, tf1ResizeBilinear, type InceptionV3 } from '../../lib/inception.js';
import { native } from '../../lib/native.js';
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
    const got = Object.fromEntries(native().inceptionWeightShapes().map((e) => [e.name, e.shape]));
    const wantNoCounters = Object.fromEntries(Object.entries(want).filter(([k]) => !k.endsWith('num_batches_tracked')));
    expect(got).toEqual(wantNoCounters);
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
