// The generator on every available device (test/gpu/helpers.ts DEVICES: the CPU
// always, CUDA when the addon reports a usable GPU; the cuda variants are skipped,
// saying why, elsewhere). On each: against the official PyTorch fixtures (rar-tiny)
// -- training-path logits with permuted orders, every KV-cached step logit, greedy CFG
// tokens --, reduced-precision weights, seeds, batch splitting, cancellation; on the
// devices other than the CPU also against the CPU backend (the reference) with the same
// weights and inputs, and on RAR-B-shaped random weights.
//
// Tolerances (per device, the CPU's measured on these fixtures with a ~3x margin):
// - cpu: logits within 1.5e-6 (forward, measured 6.0e-7) / 1e-6 (steps, 3.6e-7) of
//   PyTorch; greedy tokens identical.
// - cuda f32: max abs difference of logits divided by max(1, max |logit|) within 1e-3
//   of the CPU's and of PyTorch's (both accumulate in fp32; only summation order and
//   libm rounding differ, typically 1e-6..1e-5). Greedy tokens (helpers.ts
//   greedyAgreement): both backends teacher-forced on the CPU's tokens; wherever the
//   CPU's top-1 margin of the CFG-combined logits exceeds twice the measured logit error
//   the GPU must pick the same token, and its free-running tokens must match up to each
//   image's first near-tie. Near-ties are counted and printed.
// - cuda bf16: 5e-2 on rar-tiny, 1e-1 on RAR-B-shaped random weights. bf16 weights keep
//   8 significant bits (<= 2^-9 relative each) and, for M > 8 rows, the cuBLASLt /
//   tensor-core GEMMs also round their fp32 input activations to bf16; the CPU's bf16
//   path (weights only) measures 2.8e-3 on rar-tiny (bound 8.5e-3 there). Run with
//   RARGEN_CUBLASLT=0 to test the built-in GEMM kernels instead of cuBLASLt.
// - The CUDA-graph decode (RARGEN_CUDA_GRAPHS=strict: a capture that falls back throws)
//   against the direct path (RARGEN_CUDA_GRAPHS=0): 1e-6, the same kernels and arguments.
// Under RARGEN_GPU_STANDIN=cpu (bench/gpu.sh --dry-run) the CPU stands in for CUDA.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { NativeModel } from '../../lib/native.js';
import { addon, f32, i32, maxAbsDiff, npz, rarTinyConfig, scalar } from './helpers.js';
import {
  describeDevices, GPU, greedyAgreement, notTheReference, RAR_B_UNDER_TEST, randomIds, randomRarWeights, rarModels, rarTinyWeights,
  scaledMaxDiff, STANDIN, type Device,
} from '../gpu/helpers.js';

const cfg = rarTinyConfig();
const N = cfg.seqLen;
const V = cfg.codebookSize;
const K = cfg.numClasses;

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

/**
 * rar-tiny with model.bin's weights ('initial': forward.npz) and after adamw.npz's steps
 * ('trained': decode.npz) on the device, plus the CPU's (the reference) where the device
 * is not the CPU. Freed after the suite.
 */
function tinyModels(d: Device) {
  const m = {} as { model: NativeModel; trained: NativeModel; cpu: NativeModel; cpuT: NativeModel };
  beforeAll(async () => {
    const dev = { device: d.device, dtype: 'f32' as const }, cpu = { device: 'cpu' as const, dtype: 'f32' as const };
    const targets = d.name === 'cpu' ? [dev] : [dev, cpu];
    [m.model, m.cpu = m.model] = await rarModels(cfg, targets, rarTinyWeights('initial'));
    [m.trained, m.cpuT = m.trained] = await rarModels(cfg, targets, rarTinyWeights('trained'));
  });
  afterAll(() => {
    for (const x of new Set([m.model, m.trained, m.cpu, m.cpuT])) if (x) addon.free(x);
  });
  return m;
}

/** (B, ids, condition) of decode.npz's 3 images with their conditional and null rows. */
async function decodeRows() {
  const d = await npz('rar-tiny/decode.npz');
  const ids = i32(d.get('input_ids'));
  const none = scalar(d.get('none_condition'));
  const ids6 = new Int32Array(6 * N);
  ids6.set(ids, 0);
  ids6.set(ids, 3 * N);
  return { d, ids6, cond6: Int32Array.from([...i32(d.get('condition')), none, none, none]) };
}

describeDevices('rar-tiny fp32 vs PyTorch fixtures', (dev) => {
  const m = tinyModels(dev);
  const onCpu = dev.name === 'cpu';

  it(`training-path logits with permuted orders (forward.npz) within ${onCpu ? '1.5e-6 (measured 6.0e-7)' : '1e-3 of PyTorch and the CPU'}`, async () => {
    const f = await npz('rar-tiny/forward.npz');
    const args = [i32(f.get('input_ids')), i32(f.get('condition')), i32(f.get('orders'))] as const;
    const logits = await addon.rarForward(m.model, ...args);
    const ref = f32(f.get('logits'));
    expect(logits.length).toBe(ref.length);
    const err = maxAbsDiff(logits, ref);
    console.log(`${dev.name} forward.npz logits (3,17,32): max abs err ${err.toExponential(3)}`);
    if (onCpu) expect(err).toBeLessThan(1.5e-6);
    else {
      const fix = scaledMaxDiff(logits, ref), vsCpu = scaledMaxDiff(logits, await addon.rarForward(m.cpu, ...args));
      console.log(`rar-tiny forward: ${dev.name} f32 ${vsCpu.err.toExponential(3)} vs cpu; vs PyTorch ${fix.err.toExponential(3)}`);
      expect(fix.err).toBeLessThan(1e-3);
      expect(vsCpu.err).toBeLessThan(1e-3);
    }
    // The loss from these logits matches too (elsewhere within twice the logits' bound).
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
    console.log(`${dev.name} forward.npz loss: abs err ${lossErr.toExponential(3)}`);
    expect(lossErr).toBeLessThan(onCpu ? 3e-7 : 2e-3 * Math.max(1, ...ref.map(Math.abs))); // cpu: measured 9.5e-8
  });

  it(`every KV-cached step logit (decode.npz step_logits, conditional and null rows) within ${onCpu ? '1e-6 (measured 3.6e-7)' : '1e-3 of PyTorch and the CPU'}`, async () => {
    const { d, ids6, cond6 } = await decodeRows();
    const steps = await addon.rarDecodeSteps(m.trained, ids6, cond6);
    const ref = f32(d.get('step_logits'));
    const errCond = maxAbsDiff(steps.subarray(0, 3 * N * V), ref.subarray(0, 3 * N * V));
    const errNull = maxAbsDiff(steps.subarray(3 * N * V), ref.subarray(3 * N * V));
    console.log(`${dev.name} decode.npz step_logits (6,16,32): max abs err cond ${errCond.toExponential(3)}, null ${errNull.toExponential(3)}`);
    if (onCpu) {
      expect(errCond).toBeLessThan(1e-6);
      expect(errNull).toBeLessThan(1e-6);
    } else {
      const fix = scaledMaxDiff(steps, ref), vsCpu = scaledMaxDiff(steps, await addon.rarDecodeSteps(m.cpuT, ids6, cond6));
      console.log(`rar-tiny decode steps: ${dev.name} f32 ${vsCpu.err.toExponential(3)} vs cpu; vs PyTorch ${fix.err.toExponential(3)}`);
      expect(fix.err).toBeLessThan(1e-3);
      expect(vsCpu.err).toBeLessThan(1e-3);
    }
    // full_logits (no cache) through the training path with raster orders
    const raster = new Int32Array(6 * N);
    for (let b = 0; b < 6; b++) for (let k = 0; k < N; k++) raster[b * N + k] = k;
    const full = await addon.rarForward(m.trained, ids6, cond6, raster);
    const errFull = onCpu ? maxAbsDiff(full, f32(d.get('full_logits'))) : scaledMaxDiff(full, f32(d.get('full_logits'))).err;
    console.log(`${dev.name} decode.npz full_logits (6,17,32): ${onCpu ? 'max abs' : 'scaled'} err ${errFull.toExponential(3)}`);
    expect(errFull).toBeLessThan(onCpu ? 1e-6 : 1e-3); // cpu: measured 4.8e-7
  });

  it(onCpu ? 'greedy CFG tokens identical to greedy_tokens' : "greedy CFG tokens: the CPU's at every decisive position (near-ties counted), and greedy_tokens", async () => {
    const d = await npz('rar-tiny/decode.npz');
    const classes = [...i32(d.get('greedy_class_labels'))];
    const g = scalar(d.get('greedy_guidance_scale')), p = scalar(d.get('greedy_guidance_scale_pow'));
    if (!onCpu) {
      const a = await greedyAgreement(m.cpuT, m.trained, cfg, classes, g, p);
      console.log(`rar-tiny greedy: ${a.summary}`);
      expect(a.mismatches).toBe(0);
      expect(a.prefixAgrees).toBe(true);
    }
    const tokens = await addon.rarGenerate(m.cpuT, genOpts(classes, { guidanceScale: g, guidanceScalePow: p, greedy: true }));
    expect([...tokens]).toEqual([...i32(d.get('greedy_tokens'))]); // the CPU reference vs PyTorch
  });
});

// cpu: matrices stored in f16 keep 11 significant bits (rounding <= 2^-12 relative per
// weight), bf16 keeps 8 (<= 2^-9); activations and accumulation stay f32. Measured on
// these fixtures: f16 3.7e-4, bf16 2.8e-3 max abs (logits are O(1)). Bounds about 3x:
// 1.1e-3 (f16) and 8.5e-3 (bf16). cuda: bf16 (which also rounds the activations of
// GEMMs with M > 8 rows) within 5e-2, scaled, of the CPU's f32 and of PyTorch; f16
// weights have no CUDA bound of their own (the CUDA paths are those of bf16 with 3 more
// bits) and are checked on the CPU.
describeDevices('rar-tiny reduced-precision weights', (dev) => {
  const onCpu = dev.name === 'cpu';
  const cases = onCpu ? ([['f16', 1.1e-3], ['bf16', 8.5e-3]] as const) : ([['bf16', 5e-2]] as const);
  let cpu: NativeModel, cpuT: NativeModel;
  beforeAll(async () => {
    if (!onCpu) [cpu] = await rarModels(cfg, [{ device: 'cpu', dtype: 'f32' }], rarTinyWeights('initial'));
    if (!onCpu) [cpuT] = await rarModels(cfg, [{ device: 'cpu', dtype: 'f32' }], rarTinyWeights('trained'));
  });
  afterAll(() => {
    for (const x of [cpu, cpuT]) if (x) addon.free(x);
  });
  for (const [dtype, tol] of cases) {
    it(`${dtype} weights: forward and step logits within ${tol} of fp32 reference`, async () => {
      const [mi] = await rarModels(cfg, [{ device: dev.device, dtype }], rarTinyWeights('initial'));
      const [mt] = await rarModels(cfg, [{ device: dev.device, dtype }], rarTinyWeights('trained'));
      try {
        const f = await npz('rar-tiny/forward.npz');
        const args = [i32(f.get('input_ids')), i32(f.get('condition')), i32(f.get('orders'))] as const;
        const logits = await addon.rarForward(mi!, ...args);
        const d = await npz('rar-tiny/decode.npz');
        const { ids6, cond6 } = await decodeRows();
        const rows = onCpu ? 3 : 6; // cpu: the conditional rows (as measured); cuda: with the null rows
        const steps = await addon.rarDecodeSteps(mt!, ids6.subarray(0, rows * N), cond6.subarray(0, rows));
        const refS = f32(d.get('step_logits')).subarray(0, rows * N * V);
        const errF = onCpu ? maxAbsDiff(logits, f32(f.get('logits'))) : scaledMaxDiff(logits, f32(f.get('logits'))).err;
        const errS = onCpu ? maxAbsDiff(steps, refS) : scaledMaxDiff(steps, refS).err;
        console.log(`${dev.name} ${dtype} weights: forward err ${errF.toExponential(3)}, steps ${errS.toExponential(3)}`);
        expect(errF).toBeLessThan(tol);
        expect(errS).toBeLessThan(tol);
        expect(errF).toBeGreaterThan(0); // really stored at reduced precision
        if (!onCpu) {
          const a = scaledMaxDiff(logits, await addon.rarForward(cpu, ...args));
          const b = scaledMaxDiff(steps, await addon.rarDecodeSteps(cpuT, ids6, cond6));
          console.log(`rar-tiny ${dev.name} ${dtype} vs cpu f32: forward ${a.err.toExponential(3)}, decode steps ${b.err.toExponential(3)}`);
          expect(a.err).toBeLessThan(tol);
          expect(b.err).toBeLessThan(tol);
        }
      } finally {
        addon.free(mi!);
        addon.free(mt!);
      }
    });
  }
});

describeDevices('rar-tiny sampling', (dev) => {
  const m = tinyModels(dev);
  const classes = [0, 3, 7, 9, 1];

  it('same seed -> same tokens; different seed -> different tokens', async () => {
    const a = await addon.rarGenerate(m.model, genOpts(classes, { seed: '1234' }));
    const b = await addon.rarGenerate(m.model, genOpts(classes, { seed: '1234' }));
    const c = await addon.rarGenerate(m.model, genOpts(classes, { seed: '1235' }));
    expect(a.length).toBe(classes.length * N);
    for (const t of a) expect(t >= 0 && t < V).toBe(true);
    expect([...a]).toEqual([...b]);
    expect([...a]).not.toEqual([...c]);
  });

  it.runIf(dev.name !== 'cpu')('sampling: same seed and uniforms give the same tokens as the CPU (top-k, top-p, temperature)', async () => {
    // Inverse-CDF draws from the same uniforms; a token can only differ where a uniform
    // falls within rounding of a CDF step, so allow at most 1 of 5 x 16 tokens to differ.
    const opts = genOpts(classes, { seed: '1234', topK: 10, topP: 0.95, temperature: 1.1 });
    const onCpu = await addon.rarGenerate(m.cpuT, opts);
    const onDev = await addon.rarGenerate(m.trained, opts);
    let same = 0;
    for (let i = 0; i < onCpu.length; i++) if (onCpu[i] === onDev[i]) same++;
    console.log(`rar-tiny sampling: ${same}/${onCpu.length} tokens identical`);
    expect(same).toBeGreaterThanOrEqual(onCpu.length - N);
    const again = await addon.rarGenerate(m.trained, opts);
    expect([...again]).toEqual([...onDev]); // deterministic on the device
  });

  it('batch-split invariance: images depend on (seed, global index) only', async () => {
    const whole = await addon.rarGenerate(m.model, genOpts(classes, { seed: '77', topK: 10, topP: 0.95, temperature: 1.1 }));
    const first = await addon.rarGenerate(m.model, genOpts(classes.slice(0, 2), { seed: '77', topK: 10, topP: 0.95, temperature: 1.1 }));
    const rest = await addon.rarGenerate(
      m.model,
      genOpts(classes.slice(2), { seed: '77', indexOffset: 2, topK: 10, topP: 0.95, temperature: 1.1 }),
    );
    expect([...first, ...rest]).toEqual([...whole]);
  });

  it('no guidance (g = 0) runs the conditional rows only and differs from guided', async () => {
    const g0 = await addon.rarGenerate(m.model, genOpts(classes, { guidanceScale: 0, greedy: true }));
    const g4 = await addon.rarGenerate(m.model, genOpts(classes, { guidanceScale: 8, greedy: true }));
    expect(g0.length).toBe(g4.length);
    expect([...g0]).not.toEqual([...g4]);
    // greedy without guidance = argmax of the conditional step logits, teacher-forced on its own output
    const cond = Int32Array.from(classes.map((k) => V + 1 + k));
    const steps = await addon.rarDecodeSteps(m.model, g0, cond);
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
    await addon.rarGenerate(m.model, genOpts([1, 2], { onProgress: (d, t) => seen.push([d, t]) }));
    expect(seen.length).toBeGreaterThan(0);
    expect(seen[seen.length - 1]).toEqual([N, N]);
    const jobId = 9001;
    const p = addon.rarGenerate(m.model, genOpts(Array.from({ length: 64 }, (_, i) => i % K), { jobId }));
    // cancelled before the promise can settle: an AbortError even when the worker thread ran
    // the whole (tiny) job before this line (the flake of a loaded machine: Job::OnOK checks)
    addon.cancel(jobId);
    await expect(p).rejects.toThrow('rargen.rarGenerate: generation cancelled');
    await expect(p).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    // the model is usable again afterwards
    const ok = await addon.rarGenerate(m.model, genOpts([1]));
    expect(ok.length).toBe(N);
  });

  it('a job cancelled after its work ended on the worker thread, before it settled, still rejects (no timing race)', async () => {
    const p = addon.rarGenerate(m.model, genOpts([1], { jobId: 9002 }));
    // keep the JS thread busy for long enough that the one-image job finishes on the worker
    const t0 = Date.now();
    while (Date.now() - t0 < 300);
    addon.cancel(9002);
    await expect(p).rejects.toMatchObject({ name: 'AbortError', message: 'rargen.rarGenerate: generation cancelled' });
    expect((await addon.rarGenerate(m.model, genOpts([1]))).length).toBe(N);
  });
});

const RAR_B = RAR_B_UNDER_TEST;
describeDevices(`RAR-B-shaped random weights (C=${RAR_B.hiddenSize}, ${RAR_B.depth} blocks, ${RAR_B.numHeads} heads, V=1024) vs the CPU`, (dev) => {
  let cpu: NativeModel, gpu: NativeModel, gpu16: NativeModel;
  beforeAll(async () => {
    [cpu, gpu, gpu16] = await rarModels(
      RAR_B,
      [
        { device: 'cpu', dtype: 'f32' },
        { device: dev.device, dtype: 'f32' },
        { device: dev.device, dtype: 'bf16' },
      ],
      randomRarWeights(RAR_B, 2024),
    );
  }, 600_000);
  afterAll(() => {
    for (const x of [cpu, gpu, gpu16]) if (x) addon.free(x);
  });

  const NB = RAR_B.seqLen, VB = RAR_B.codebookSize, KB = RAR_B.numClasses;
  const greedy = (classIds: number[], guidanceScale: number, guidanceScalePow: number) =>
    genOpts(classIds, { guidanceScale, guidanceScalePow, greedy: true, seed: '0' });

  it('training-path logits, 2 images with a random order: f32 within 1e-3, bf16 within 1e-1', async () => {
    const ids = randomIds(2 * NB, VB, 5);
    const cond = Int32Array.from([VB + 1 + 207, VB + KB + 1]);
    const orders = new Int32Array(2 * NB);
    for (let k = 0; k < NB; k++) orders[k] = k;
    const perm = randomIds(NB, 1 << 30, 6);
    const rest = Array.from({ length: NB }, (_, k) => k).sort((x, y) => perm[x] - perm[y]);
    orders.set(rest, NB);
    const ref = await addon.rarForward(cpu, ids, cond, orders);
    const a = scaledMaxDiff(await addon.rarForward(gpu, ids, cond, orders), ref);
    const b = scaledMaxDiff(await addon.rarForward(gpu16, ids, cond, orders), ref);
    console.log(`RAR-B forward: ${dev.name} f32 ${a.err.toExponential(3)}, ${dev.name} bf16 ${b.err.toExponential(3)} (max |logit| ${a.scale.toFixed(2)})`);
    expect(a.err).toBeLessThan(1e-3);
    expect(b.err).toBeLessThan(1e-1);
  }, 600_000);

  it('every KV-cached step logit of one image: f32 within 1e-3', async () => {
    const ids = randomIds(NB, VB, 8);
    const cond = Int32Array.from([VB + 1 + 42]);
    const ref = await addon.rarDecodeSteps(cpu, ids, cond);
    const a = scaledMaxDiff(await addon.rarDecodeSteps(gpu, ids, cond), ref);
    console.log(`RAR-B decode steps: ${dev.name} f32 ${a.err.toExponential(3)} (max |logit| ${a.scale.toFixed(2)})`);
    expect(a.err).toBeLessThan(1e-3);
  }, 600_000);

  it('KV cache on the device: every decode-step logit equals the full forward (raster order) within 1e-4', async () => {
    const B = 2;
    const ids = randomIds(B * NB, VB, 9);
    const cond = Int32Array.from([VB + 1 + 3, VB + KB + 1]);
    const raster = new Int32Array(B * NB).map((_, i) => i % NB);
    const full = await addon.rarForward(gpu, ids, cond, raster); // (B, N+1, V)
    const steps = await addon.rarDecodeSteps(gpu, ids, cond); // (B, N, V)
    const f = new Float32Array(B * NB * VB);
    for (let b = 0; b < B; b++) f.set(full.subarray(b * (NB + 1) * VB, (b * (NB + 1) + NB) * VB), b * NB * VB);
    const a = scaledMaxDiff(steps, f);
    console.log(`RAR-B ${GPU} KV-cached steps vs full forward: err ${a.err.toExponential(3)} (max |logit| ${a.scale.toFixed(2)})`);
    expect(a.err).toBeLessThan(1e-4);
  }, 600_000);

  // by capability: where the backend has no graphs (the CPU, and the CPU standing in) the
  // two paths would be the same one
  const graphs = dev.skip === undefined && addon.backendSupports(dev.device, 'graph_replay', 'f32');
  it.runIf(graphs)('CUDA-graph decode (strict: a capture that falls back throws) equals the direct path (RARGEN_CUDA_GRAPHS=0)', async () => {
    const ids = randomIds(3 * NB, VB, 10);
    const cond = Int32Array.from([VB + 1 + 5, VB + 1 + 6, VB + KB + 1]);
    const graphed = await addon.rarDecodeSteps(gpu, ids, cond);
    const before = process.env.RARGEN_CUDA_GRAPHS;
    process.env.RARGEN_CUDA_GRAPHS = '0';
    let direct: Float32Array;
    try {
      direct = await addon.rarDecodeSteps(gpu, ids, cond);
    } finally {
      process.env.RARGEN_CUDA_GRAPHS = before;
    }
    const a = scaledMaxDiff(graphed, direct);
    console.log(`RAR-B graph vs direct decode steps: err ${a.err.toExponential(3)}`);
    expect(a.err).toBeLessThan(1e-6); // the same kernels with the same arguments
  }, 600_000);

  it("greedy CFG generation (g=16): the CPU's token at every decisive position; near-ties counted", async () => {
    const a = await greedyAgreement(cpu, gpu, RAR_B, [207, 980], 16, 2.75);
    console.log(`RAR-B greedy f32: ${a.summary}`);
    expect(a.mismatches).toBe(0);
    expect(a.prefixAgrees).toBe(true);
    expect(a.nearTies).toBeLessThan(a.positions / 4); // a working path has few
  }, 600_000);

  const BIG = STANDIN ? 8 : 64;
  it(`a batch of ${BIG} (one GEMM path) agrees with the same images one by one (another) except at near-ties`, async () => {
    const classes = Array.from({ length: BIG }, (_, i) => (i * 37) % KB);
    const all = await addon.rarGenerate(gpu, greedy(classes, 16, 2.75));
    // teacher-forced on the batch's tokens: image i inside the batch vs alone
    const ids = new Int32Array(2 * BIG * NB);
    ids.set(all, 0);
    ids.set(all, BIG * NB);
    const cond = Int32Array.from([...classes.map((k) => VB + 1 + k), ...classes.map(() => VB + KB + 1)]);
    const inBatch = await addon.rarDecodeSteps(gpu, ids, cond);
    for (const i of [0, 17 % BIG, BIG - 1]) {
      const one = all.subarray(i * NB, (i + 1) * NB);
      const alone = await addon.rarDecodeSteps(gpu, Int32Array.from([...one, ...one]), Int32Array.from([VB + 1 + classes[i]!, VB + KB + 1]));
      const rows = (r: Float32Array, a: number, b: number) => Float32Array.from([...r.subarray(a * NB * VB, (a + 1) * NB * VB), ...r.subarray(b * NB * VB, (b + 1) * NB * VB)]);
      const d = scaledMaxDiff(alone, rows(inBatch, i, BIG + i));
      console.log(`RAR-B image ${i}: alone vs in a batch of ${BIG}: logits err ${d.err.toExponential(3)}`);
      expect(d.err).toBeLessThan(1e-4);
    }
  }, 600_000);
}, notTheReference);
