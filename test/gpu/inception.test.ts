// The TF1-exact FID InceptionV3 on the CUDA backend against the CPU backend and against
// torch-fidelity's features (test/fixtures/inception, the formula weights of
// test/fid/helpers.ts). Skipped, saying why, where no usable GPU is present (CI).
//
// Tolerances: pool3, spatial and logits within 1e-4 of the fixture (max abs error / max
// abs, as test/fid/inception.test.ts holds the CPU to) and of the CPU: fp32 convolutions
// (3xTF32 on tensor cores, SIMT for small outputs) differ only in summation order.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadInception, type InceptionV3 } from '../../lib/inception.js';
import { tempDir } from '../helpers/tmp.js';
import { formulaWeightsFile, inceptionFixture, relErr, requireEvalBinding } from '../fid/helpers.js';
import { GPU, hasCuda } from './helpers.js';

const tmp = tempDir('gpu-inception');

describe.skipIf(!hasCuda)('InceptionV3 on CUDA vs CPU vs torch-fidelity', () => {
  let cpu: InceptionV3, gpu: InceptionV3;
  beforeAll(async () => {
    requireEvalBinding();
    const file = await formulaWeightsFile(tmp);
    cpu = await loadInception(file, { device: 'cpu' });
    gpu = await loadInception(file, { device: GPU });
  });
  afterAll(() => {
    cpu?.dispose();
    gpu?.dispose();
  });

  for (const size of [256, 64]) {
    it(`pool3, spatial and logits for ${size}x${size} images within 1e-4 of the CPU and of torch-fidelity`, async () => {
      const f = await inceptionFixture();
      const img = f.get(`images${size}`)!;
      const B = img.shape[0]!;
      const a = await gpu.features(img.data as Uint8Array, B, size, size);
      const r = await cpu.features(img.data as Uint8Array, B, size, size);
      for (const name of ['pool3', 'spatial', 'logits'] as const) {
        const vsCpu = relErr(a[name], r[name]);
        const vsTorch = relErr(a[name], f.get(`${name}_${size}`)!.data as Float32Array);
        console.log(`inception ${name}_${size}: ${GPU} vs cpu err ${vsCpu.toExponential(2)}, vs torch-fidelity ${vsTorch.toExponential(2)}`);
        expect(vsCpu, `${name}_${size} vs cpu`).toBeLessThanOrEqual(1e-4);
        expect(vsTorch, `${name}_${size} vs torch-fidelity`).toBeLessThanOrEqual(1e-4);
      }
    });
  }
});
