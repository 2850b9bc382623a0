// The KV-cached decode equals the full (training-path) forward at every position, at
// a bigger shape than the fixtures: C=96, 2 heads (head dim 48, not a power of two),
// depth 2, MLP 384, N=64, V=128, K=7, random weights; f32, f16 and bf16 storage.
import { describe, expect, it } from 'vitest';
import type { NativeModel, NativeRarConfig } from '../../lib/native.js';
import { addon, maxAbsDiff, rng } from './helpers.js';

const cfg: NativeRarConfig = {
  hiddenSize: 96,
  depth: 2,
  numHeads: 2,
  mlpDim: 384,
  seqLen: 64,
  codebookSize: 128,
  numClasses: 7,
  posEmbedRows: 64 + 1024,
  timestepRows: 64 + 100,
};

function randomWeights(dtype: 'f32' | 'f16' | 'bf16', seed: number): NativeModel {
  const m = addon.createRar(cfg, 'cpu', dtype);
  const r = rng(seed);
  const C = cfg.hiddenSize, I = cfg.mlpDim, D = C / cfg.numHeads, V = cfg.codebookSize, K = cfg.numClasses;
  const set = (name: string, shape: number[], scale: number, offset = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = offset + scale * (2 * r() - 1);
    addon.setWeight(m, name, data, shape);
  };
  set('cls_token', [1, 1, C], 0.5);
  set('pos_embed', [1, cfg.posEmbedRows, C], 0.5);
  set('target_aware_pos_embed', [1, cfg.posEmbedRows, C], 0.5);
  set('timesteps_embeddings', [1, cfg.timestepRows, C], 0.5);
  set('embeddings.weight', [V + 1 + K + 1, C], 1);
  for (let i = 0; i < cfg.depth; i++) {
    const p = `blocks.${i}.`;
    set(p + 'norm1.weight', [C], 0.2, 1);
    set(p + 'norm1.bias', [C], 0.1);
    set(p + 'attn.qkv.weight', [3 * C, C], 1 / Math.sqrt(C));
    set(p + 'attn.qkv.bias', [3 * C], 0.1);
    for (const n of ['q_norm', 'k_norm']) {
      set(p + `attn.${n}.weight`, [D], 0.5, 1.5);
      set(p + `attn.${n}.bias`, [D], 0.2);
    }
    set(p + 'attn.proj.weight', [C, C], 1 / Math.sqrt(C));
    set(p + 'attn.proj.bias', [C], 0.1);
    set(p + 'norm2.weight', [C], 0.2, 1);
    set(p + 'norm2.bias', [C], 0.1);
    set(p + 'mlp.fc1.weight', [I, C], 1 / Math.sqrt(C));
    set(p + 'mlp.fc1.bias', [I], 0.1);
    set(p + 'mlp.fc2.weight', [C, I], 1 / Math.sqrt(I));
    set(p + 'mlp.fc2.bias', [C], 0.1);
    set(p + 'adaLN_modulation.1.weight', [6 * C, C], 1 / Math.sqrt(C));
    set(p + 'adaLN_modulation.1.bias', [6 * C], 0.2);
  }
  set('adaln_before_head.adaLN_modulation.1.weight', [2 * C, C], 1 / Math.sqrt(C));
  set('adaln_before_head.adaLN_modulation.1.bias', [2 * C], 0.2);
  set('lm_head.weight', [V, C], 1 / Math.sqrt(C));
  set('lm_head.bias', [V], 0.1);
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
        expect(err).toBeLessThan(3.2e-6); // measured 1.0e-6 (f32), 1.1e-6 (f16), 9.5e-7 (bf16)
        // one image alone decodes the same as inside the batch
        const alone = await addon.rarDecodeSteps(m, ids.subarray(2 * N, 3 * N), cond.subarray(2, 3));
        const errAlone = maxAbsDiff(alone, steps.subarray(2 * N * V, 3 * N * V));
        console.log(`${dtype}: alone vs in batch ${errAlone.toExponential(3)}`);
        expect(errAlone).toBeLessThan(1.5e-6); // measured 3.9e-7 (f32), 4.8e-7 (f16, bf16)
      } finally {
        addon.free(m);
      }
    });
  }
});
