// The generator on the CPU backend against the official PyTorch fixtures (rar-tiny):
// training-path logits with permuted orders, every KV-cached step logit, greedy CFG
// tokens; then reduced-precision weights, seeds and batch splitting.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeModel } from '../../lib/native.js';
import { addon, f32, i32, loadRarTiny, maxAbsDiff, npz, rarTinyConfig, scalar } from './helpers.js';

const cfg = rarTinyConfig();
const N = cfg.seqLen;
const V = cfg.codebookSize;
const K = cfg.numClasses;

let model: NativeModel; // model.bin: forward.npz
let trained: NativeModel; // adamw.npz parameters: decode.npz
beforeAll(async () => {
  model = await loadRarTiny('f32');
  trained = await loadRarTiny('f32', 'trained');
});
afterAll(() => {
  addon.free(model);
  addon.free(trained);
});

function genOpts(classIds: number[], extra: Partial<Parameters<typeof addon.rarGenerate>[1]> = {}) {
  return {
    classIds: Int32Array.from(classIds),
    guidanceScale: 4,
    guidanceScalePow: 1.5,
    temperature: 1,
    topK: 0,
    topP: 1,
    greedy: false,
    seed: '42',
    indexOffset: 0,
    ...extra,
  };
}

describe('rar-tiny fp32 vs PyTorch fixtures', () => {
  it('training-path logits with permuted orders (forward.npz) within 1.5e-6 (measured 4.8e-7)', async () => {
    const f = await npz('rar-tiny/forward.npz');
    const logits = await addon.rarForward(model, i32(f.get('input_ids')), i32(f.get('condition')), i32(f.get('orders')));
    const ref = f32(f.get('logits'));
    expect(logits.length).toBe(ref.length);
    const err = maxAbsDiff(logits, ref);
    console.log(`forward.npz logits (3,17,32): max abs err ${err.toExponential(3)}`);
    expect(err).toBeLessThan(1.5e-6);
    // The loss from these logits matches too.
    let loss = 0;
    const labels = i32(f.get('labels'));
    for (let b = 0; b < 3; b++)
      for (let k = 0; k < N; k++) {
        const row = logits.subarray((b * (N + 1) + k) * V, (b * (N + 1) + k + 1) * V);
        const mx = Math.max(...row);
        let s = 0;
        for (const v of row) s += Math.exp(v - mx);
        loss += Math.log(s) + mx - row[labels[b * N + k]];
      }
    const lossErr = Math.abs(loss / (3 * N) - scalar(f.get('loss')));
    console.log(`forward.npz loss: abs err ${lossErr.toExponential(3)}`);
    expect(lossErr).toBeLessThan(3e-7); // measured 9.5e-8
  });

  it('every KV-cached step logit (decode.npz step_logits, conditional and null rows) within 1e-6 (measured 3.6e-7)', async () => {
    const d = await npz('rar-tiny/decode.npz');
    const ids = i32(d.get('input_ids'));
    const cond = i32(d.get('condition'));
    const none = scalar(d.get('none_condition'));
    const ids6 = new Int32Array(6 * N);
    ids6.set(ids, 0);
    ids6.set(ids, 3 * N);
    const cond6 = Int32Array.from([...cond, none, none, none]);
    const steps = await addon.rarDecodeSteps(trained, ids6, cond6);
    const ref = f32(d.get('step_logits'));
    const errCond = maxAbsDiff(steps.subarray(0, 3 * N * V), ref.subarray(0, 3 * N * V));
    const errNull = maxAbsDiff(steps.subarray(3 * N * V), ref.subarray(3 * N * V));
    console.log(`decode.npz step_logits (6,16,32): max abs err cond ${errCond.toExponential(3)}, null ${errNull.toExponential(3)}`);
    expect(errCond).toBeLessThan(1e-6);
    expect(errNull).toBeLessThan(1e-6);
    // full_logits (no cache) through the training path with raster orders
    const raster = new Int32Array(6 * N);
    for (let b = 0; b < 6; b++) for (let k = 0; k < N; k++) raster[b * N + k] = k;
    const full = await addon.rarForward(trained, ids6, cond6, raster);
    const errFull = maxAbsDiff(full, f32(d.get('full_logits')));
    console.log(`decode.npz full_logits (6,17,32): max abs err ${errFull.toExponential(3)}`);
    expect(errFull).toBeLessThan(1e-6); // measured 3.6e-7
  });

  it('greedy CFG tokens identical to greedy_tokens', async () => {
    const d = await npz('rar-tiny/decode.npz');
    const tokens = await addon.rarGenerate(
      trained,
      genOpts([...i32(d.get('greedy_class_labels'))], {
        guidanceScale: scalar(d.get('greedy_guidance_scale')),
        guidanceScalePow: scalar(d.get('greedy_guidance_scale_pow')),
        temperature: 1,
        greedy: true,
      }),
    );
    expect([...tokens]).toEqual([...i32(d.get('greedy_tokens'))]);
  });
});

describe('rar-tiny reduced-precision weights', () => {
  // Matrices stored in f16 keep 11 significant bits (rounding <= 2^-12 relative per
  // weight), bf16 keeps 8 (<= 2^-9); activations and accumulation stay f32. Measured
  // on these fixtures: f16 3.7e-4, bf16 2.8e-3 max abs (logits are O(1)). Bounds about
  // 3x: 1.1e-3 (f16) and 8.5e-3 (bf16).
  for (const [dtype, tol] of [
    ['f16', 1.1e-3],
    ['bf16', 8.5e-3],
  ] as const) {
    it(`${dtype} weights: forward and step logits within ${tol} of fp32 reference`, async () => {
      const m = await loadRarTiny(dtype);
      const mt = await loadRarTiny(dtype, 'trained');
      try {
        const f = await npz('rar-tiny/forward.npz');
        const logits = await addon.rarForward(m, i32(f.get('input_ids')), i32(f.get('condition')), i32(f.get('orders')));
        const errF = maxAbsDiff(logits, f32(f.get('logits')));
        const d = await npz('rar-tiny/decode.npz');
        const steps = await addon.rarDecodeSteps(mt, i32(d.get('input_ids')), i32(d.get('condition')));
        const errS = maxAbsDiff(steps, f32(d.get('step_logits')).subarray(0, 3 * N * V));
        console.log(`${dtype} weights: forward max abs err ${errF.toExponential(3)}, steps ${errS.toExponential(3)}`);
        expect(errF).toBeLessThan(tol);
        expect(errS).toBeLessThan(tol);
        expect(errF).toBeGreaterThan(0); // really stored at reduced precision
      } finally {
        addon.free(m);
        addon.free(mt);
      }
    });
  }
});

describe('rar-tiny sampling', () => {
  const classes = [0, 3, 7, 9, 1];

  it('same seed -> same tokens; different seed -> different tokens', async () => {
    const a = await addon.rarGenerate(model, genOpts(classes, { seed: '1234' }));
    const b = await addon.rarGenerate(model, genOpts(classes, { seed: '1234' }));
    const c = await addon.rarGenerate(model, genOpts(classes, { seed: '1235' }));
    expect(a.length).toBe(classes.length * N);
    for (const t of a) expect(t >= 0 && t < V).toBe(true);
    expect([...a]).toEqual([...b]);
    expect([...a]).not.toEqual([...c]);
  });

  it('batch-split invariance: images depend on (seed, global index) only', async () => {
    const whole = await addon.rarGenerate(model, genOpts(classes, { seed: '77', topK: 10, topP: 0.95, temperature: 1.1 }));
    const first = await addon.rarGenerate(model, genOpts(classes.slice(0, 2), { seed: '77', topK: 10, topP: 0.95, temperature: 1.1 }));
    const rest = await addon.rarGenerate(
      model,
      genOpts(classes.slice(2), { seed: '77', indexOffset: 2, topK: 10, topP: 0.95, temperature: 1.1 }),
    );
    expect([...first, ...rest]).toEqual([...whole]);
  });

  it('no guidance (g = 0) runs the conditional rows only and differs from guided', async () => {
    const g0 = await addon.rarGenerate(model, genOpts(classes, { guidanceScale: 0, greedy: true }));
    const g4 = await addon.rarGenerate(model, genOpts(classes, { guidanceScale: 8, greedy: true }));
    expect(g0.length).toBe(g4.length);
    expect([...g0]).not.toEqual([...g4]);
    // greedy without guidance = argmax of the conditional step logits, teacher-forced on its own output
    const cond = Int32Array.from(classes.map((k) => V + 1 + k));
    const steps = await addon.rarDecodeSteps(model, g0, cond);
    for (let b = 0; b < classes.length; b++)
      for (let t = 0; t < N; t++) {
        const row = steps.subarray((b * N + t) * V, (b * N + t + 1) * V);
        let best = 0;
        for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
        expect(g0[b * N + t]).toBe(best);
      }
  });

  it('reports progress and can be cancelled', async () => {
    const seen: Array<[number, number]> = [];
    await addon.rarGenerate(model, genOpts([1, 2], { onProgress: (d, t) => seen.push([d, t]) }));
    expect(seen.length).toBeGreaterThan(0);
    expect(seen[seen.length - 1]).toEqual([N, N]);
    const jobId = 9001;
    const p = addon.rarGenerate(model, genOpts(Array.from({ length: 64 }, (_, i) => i % K), { jobId }));
    addon.cancel(jobId);
    await expect(p).rejects.toThrow('rargen: generation cancelled');
    // the model is usable again afterwards
    const ok = await addon.rarGenerate(model, genOpts([1]));
    expect(ok.length).toBe(N);
  });
});
