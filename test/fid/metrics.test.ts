// ADM's evaluator math (guided-diffusion evaluations/evaluator.py) on the synthetic
// features of test/fixtures/inception/metrics.npz: np.mean/np.cov statistics, FID by
// scipy's sqrtm, the Inception Score in splits of 250, and k=3 precision/recall on the
// first 64 feature dims (float32 distances), which must match exactly.
import { beforeAll, describe, expect, it } from 'vitest';
import { FeatureStatistics, frechetDistance, inceptionScore, precisionRecall } from '../../lib/fid.js';
import type { NpyArray } from '../../lib/io/index.js';
import { maxAbsDiff, metricsFixture, requireEvalBinding } from './helpers.js';

let m: Map<string, NpyArray>;
const f32 = (name: string) => m.get(name)!.data as Float32Array;
const f64 = (name: string) => m.get(name)!.data as Float64Array;
const scalar = (name: string) => Number((m.get(name)!.data as Float64Array | BigInt64Array)[0]);

beforeAll(async () => {
  requireEvalBinding();
  m = await metricsFixture();
});

/** rows of (N, D) restricted to the first d columns */
function firstDims(x: Float32Array, D: number, d: number): Float32Array {
  const n = x.length / D;
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) out.set(x.subarray(i * D, i * D + d), i * d);
  return out;
}

describe('ADM evaluator metrics', () => {
  it('streams np.mean / np.cov(rowvar=False) statistics in float64', async () => {
    const D = m.get('features_ref')!.shape[1]!;
    const s = new FeatureStatistics(D);
    const x = f32('features_ref');
    const n = x.length / D;
    for (let i = 0; i < n; i += 77) await s.add(x.subarray(i * D, Math.min(n, i + 77) * D));
    const r = await s.result();
    expect(r.count).toBe(n);
    console.log(`stats sigma abs ${maxAbsDiff(r.sigma, f64('sigma_ref')).toExponential(3)}, mu abs ${maxAbsDiff(r.mu, f32('mu_ref')).toExponential(3)}`);
    expect(maxAbsDiff(r.sigma, f64('sigma_ref'))).toBeLessThan(5e-15); // measured 1.4e-15
    expect(maxAbsDiff(r.mu, f32('mu_ref'))).toBeLessThan(2.5e-6); // measured 8.1e-7: the fixture's mu is numpy's float32 mean
  });

  it('FID matches scipy.linalg.sqrtm to 1.2e-7 relative (measured 3.8e-8)', async () => {
    const D = m.get('features_ref')!.shape[1]!;
    const want = scalar('fid');
    const stats = async (x: Float32Array) => {
      const s = new FeatureStatistics(D);
      await s.add(x);
      return s.result();
    };
    const fromFeatures = await frechetDistance(await stats(f32('features_sample')), await stats(f32('features_ref')));
    const fromStored = await frechetDistance(
      { mu: Float64Array.from(f32('mu_sample')), sigma: f64('sigma_sample') },
      { mu: Float64Array.from(f32('mu_ref')), sigma: f64('sigma_ref') },
    );
    console.log(`fid ${fromFeatures} (from features), ${fromStored} (from stored mu/sigma), fixture ${want}`);
    expect(Math.abs(fromFeatures - want) / want).toBeLessThanOrEqual(1.2e-7);
    expect(Math.abs(fromStored - want) / want).toBeLessThanOrEqual(5e-9); // measured 1.6e-9
    // symmetric in its arguments, and zero against itself
    const s = await stats(f32('features_ref'));
    console.log(`fid rel ${(Math.abs(fromFeatures - want) / want).toExponential(3)} ${(Math.abs(fromStored - want) / want).toExponential(3)}, self ${await frechetDistance(s, s)}`);
    expect(Math.abs(await frechetDistance(s, s))).toBeLessThan(3.5e-12); // measured 1.1e-12
  });

  it('Inception Score matches in splits of 250', async () => {
    const [N, D] = m.get('features_sample')!.shape as [number, number];
    const C = m.get('is_weight')!.shape[1]!;
    const x = f32('features_sample');
    const w = f32('is_weight');
    const logits = new Float32Array(N * C);
    const row = new Float64Array(C);
    for (let i = 0; i < N; i++) {
      row.fill(0);
      for (let d = 0; d < D; d++) {
        const v = x[i * D + d]!;
        if (v === 0) continue;
        for (let c = 0; c < C; c++) row[c]! += v * w[d * C + c]!;
      }
      logits.set(row, i * C);
    }
    const got = await inceptionScore(logits, { classes: C, splitSize: scalar('is_split_size') });
    const want = scalar('inception_score');
    console.log(`inception score ${got}, fixture ${want}, rel ${(Math.abs(got - want) / want).toExponential(3)}`);
    expect(Math.abs(got - want) / want).toBeLessThanOrEqual(1.1e-7); // measured 3.5e-8 (the fixture is a float32)
  });

  it('precision and recall (k=3, float32 distances) match exactly', async () => {
    const D = m.get('features_ref')!.shape[1]!;
    const d = scalar('pr_dims');
    const ref = firstDims(f32('features_ref'), D, d);
    const sam = firstDims(f32('features_sample'), D, d);
    const calls: number[] = [];
    const pr = await precisionRecall(ref, sam, d, { k: 3, onProgress: (done) => calls.push(done) });
    console.log(`precision ${pr.precision} recall ${pr.recall}; fixture ${scalar('precision')} ${scalar('recall')}`);
    expect(pr.precision).toBe(scalar('precision'));
    expect(pr.recall).toBe(scalar('recall'));
    expect(calls.length).toBeGreaterThan(0);
  });

  it('precision/recall do not depend on the distance tiles', async () => {
    const D = m.get('features_ref')!.shape[1]!;
    const d = scalar('pr_dims');
    const ref = firstDims(f32('features_ref'), D, d);
    const sam = firstDims(f32('features_sample'), D, d);
    const { native } = await import('../../lib/native.js');
    const pr = await native().precisionRecall(ref, ref.length / d, sam, sam.length / d, d, { k: 3, rowBlock: 97, colBlock: 131 });
    expect(pr.precision).toBe(scalar('precision'));
    expect(pr.recall).toBe(scalar('recall'));
  });

  it('rejects bad metric inputs with clear messages', async () => {
    await expect(frechetDistance({ mu: new Float64Array(3), sigma: new Float64Array(9) }, { mu: new Float64Array(2), sigma: new Float64Array(4) })).rejects.toThrow('different dimensions: 3 and 2');
    await expect(frechetDistance({ mu: new Float64Array(2), sigma: new Float64Array(3) }, { mu: new Float64Array(2), sigma: new Float64Array(4) })).rejects.toThrow('Expected sigma of 2 x 2 values');
    const nan = new Float64Array(4);
    nan[3] = NaN;
    await expect(frechetDistance({ mu: new Float64Array(2), sigma: nan }, { mu: new Float64Array(2), sigma: new Float64Array(4) })).rejects.toThrow('non-finite');
    await expect(inceptionScore(new Float32Array(10), { classes: 3 })).rejects.toThrow('Expected logits of (rows, 3)');
    await expect(precisionRecall(new Float32Array(6), new Float32Array(60), 2)).rejects.toThrow('needs more than 3 feature vectors');
    const s = new FeatureStatistics(4);
    await s.add(new Float32Array(4));
    await expect(s.result()).rejects.toThrow('at least 2 feature rows');
  });
});
