// bench/fid: the FID InceptionV3 on the CPU backend (images/s for 256x256 inputs,
// resized to 299) against the PyTorch eager peer (bench/peers/torch_inception.py, Debian
// python3-torch) in the same run, same weights (the fixture formula weights written by
// saveTorch), same thread count; plus the metric kernels at ADM's sizes: one Frechet
// distance at D=2048 and precision/recall for N reference x N sample pool3 vectors.
// Prints one JSON object.
//
//   node dist/bench/fid.js [--threads N] [--batch 8] [--iters 3] [--size 256] [--pr-n 5000] [--no-peer]
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, machine, runPeer } from './_util.js';
import { FeatureStatistics, frechetDistance, precisionRecall } from '../lib/fid.js';
import { loadInception } from '../lib/inception.js';
import { writeFormulaInceptionWeights } from '../lib/testing/inception-weights.js';

const { values, num } = benchArgs({
  threads: String(cpus().length),
  batch: '8',
  iters: '3',
  size: '256',
  'pr-n': '5000',
  'no-peer': false,
  python: '/usr/bin/python3',
});
const threads = num('threads');
const batch = num('batch');
const iters = num('iters');
const size = num('size');
const prN = num('pr-n');

function randomImages(n: number, seed: number): Uint8Array {
  const a = new Uint8Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    a[i] = s & 255;
  }
  return a;
}

/** Non-negative pseudo-features (pool3 is a mean of ReLU outputs), n x d. */
function randomFeatures(n: number, d: number, seed: number): Float32Array {
  const a = new Float32Array(n * d);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < a.length; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    const u = s / 4294967296;
    a[i] = u * u * 2;
  }
  return a;
}

const dir = mkdtempSync(join(tmpdir(), 'rargen-bench-fid-'));
try {
  const weights = join(dir, 'inception-formula.pth');
  await writeFormulaInceptionWeights(weights);
  const net = await loadInception(weights, { device: 'cpu', threads });
  const images = randomImages(batch * size * size * 3, 7);
  await net.features(images, batch, size, size); // warm-up (workspace, page faults)
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) await net.features(images, batch, size, size);
  const rargenSeconds = (performance.now() - t0) / 1000;
  net.dispose();
  const rargen = { images_per_s: (batch * iters) / rargenSeconds, seconds: rargenSeconds };

  let peer: Record<string, unknown> | { error: string } | undefined;
  if (!values['no-peer']) {
    const args = ['--weights', weights, '--threads', String(threads), '--batch', String(batch), '--size', String(size), '--iters', String(iters)];
    peer = runPeer(values.python, 'torch_inception.py', args, { errorLines: 5, env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
  }

  // metrics at ADM's sizes
  const feats = randomFeatures(3000, 2048, 11);
  const st = new FeatureStatistics(2048, threads);
  const ts = performance.now();
  for (let i = 0; i < 3000; i += 64) await st.add(feats.subarray(i * 2048, Math.min(3000, i + 64) * 2048));
  const statsSeconds = (performance.now() - ts) / 1000;
  const g1 = await st.result();
  const g2 = { mu: g1.mu, sigma: Float64Array.from(g1.sigma, (v, i) => (i % 2049 === 0 ? v + 0.01 : v)) };
  const tf = performance.now();
  await frechetDistance(g1, g2, threads);
  const fidSeconds = (performance.now() - tf) / 1000;
  const ref = randomFeatures(prN, 2048, 21);
  const sam = randomFeatures(prN, 2048, 22);
  const tp = performance.now();
  await precisionRecall(ref, sam, 2048, { threads });
  const prSeconds = (performance.now() - tp) / 1000;
  const prGflop = (3 * prN * prN * 2048 * 2) / 1e9;

  const out = {
    bench: 'fid',
    ...machine(),
    threads,
    inception: {
      batch,
      input: `${size}x${size} -> 299x299`,
      iters,
      rargen,
      torch: peer,
      speedup: peer && 'images_per_s' in peer ? rargen.images_per_s / (peer.images_per_s as number) : undefined,
    },
    metrics: {
      stats_3000x2048_seconds: statsSeconds,
      frechet_distance_2048_seconds: fidSeconds,
      precision_recall: { n_ref: prN, n_sample: prN, dim: 2048, seconds: prSeconds, gemm_gflop_per_s: prGflop / prSeconds },
    },
  };
  console.log(JSON.stringify(out, null, 2));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
