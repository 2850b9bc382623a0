// The KV-cached decode equals the full (training-path) forward at every position, at
// a bigger shape than the fixtures: C=96, 2 heads (head dim 48, not a power of two),
// depth 2, MLP 384, N=64, V=128, K=7, random weights; f32, f16 and bf16 storage.
import { describe, expect, it } from 'vitest';
import type { NativeModel, NativeRarConfig } from '../../lib/native.js';
import { positionRows } from '../../lib/config.js';
import { randomGeneratorWeights } from '../../lib/testing/weights.js';
import { addon, maxAbsDiff, rng } from './helpers.js';

const cfg: NativeRarConfig = {
  hiddenSize: 96,
  depth: 2,
  numHeads: 2,
  mlpDim: 384,
  seqLen: 64,
  codebookSize: 128,
  numClasses: 7,
  ...positionRows(64),
};

function randomWeights(dtype: 'f32' | 'f16' | 'bf16', seed: number): NativeModel {
  const m = addon.createRar(cfg, 'cpu', dtype);
  for (const [name, data, shape] of randomGeneratorWeights(cfg, seed)) addon.setWeight(m, name, data, shape);
  addon.finalize(m);
  return m;
}

describe('KV-cached decode == full forward at every position (C=96, H=2, D=48)', () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    it(`${dtype} weights`, async () => {
      const m = randomWeights(dtype, 7);
      try {
        const B = 5, N = cfg.seqLen, V = cfg.codebookSize, K = cfg.numClasses;
        const r = rng(99);
        const ids = new Int32Array(B * N).map(() => Math.floor(r() * V));
        // classes, two rows sharing one, and the null class (adaLN rows are deduplicated)
        const cond = Int32Array.from([V + 1 + 3, V + 1 + 3, V + 1 + 0, V + 1 + K - 1, V + K + 1]);
        const raster = new Int32Array(B * N).map((_, i) => i % N);
        const full = await addon.rarForward(m, ids, cond, raster); // (B, N+1, V)
        const steps = await addon.rarDecodeSteps(m, ids, cond); // (B, N, V)
        let err = 0;
        let scale = 0;
        for (let b = 0; b < B; b++)
          for (let t = 0; t < N; t++)
            for (let v = 0; v < V; v++) {
              const a = steps[(b * N + t) * V + v], f = full[(b * (N + 1) + t) * V + v];
              err = Math.max(err, Math.abs(a - f));
              scale = Math.max(scale, Math.abs(f));
            }
        console.log(`${dtype}: decode steps vs full forward, ${B}x${N} positions: max abs err ${err.toExponential(3)} (max |logit| ${scale.toFixed(2)})`);
        expect(err).toBeLessThan(3.2e-6); // measured 9.5e-7 (f32, f16, bf16; lib/testing/weights.ts values)
        // one image alone decodes the same as inside the batch
        const alone = await addon.rarDecodeSteps(m, ids.subarray(2 * N, 3 * N), cond.subarray(2, 3));
        const errAlone = maxAbsDiff(alone, steps.subarray(2 * N * V, 3 * N * V));
        console.log(`${dtype}: alone vs in batch ${errAlone.toExponential(3)}`);
        expect(errAlone).toBeLessThan(1.5e-6); // measured 3.0e-7 (f32), 3.6e-7 (f16, bf16)
      } finally {
        addon.free(m);
      }
    });
  }
});
