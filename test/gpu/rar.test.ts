// The generator on the CUDA backend against the CPU backend (the reference, itself
// checked against the PyTorch fixtures in test/native): same weights, same inputs.
// Skipped, saying why, where no usable GPU is present (CI).
//
// Tolerances (max abs difference of logits, divided by max(1, max |logit|)):
// - CUDA f32 vs CPU f32: 1e-3 (both accumulate in fp32; only summation order and
//   libm rounding differ, typically 1e-6..1e-5). Greedy tokens must be identical.
// - CUDA bf16 vs CPU f32: 5e-2 on rar-tiny, 1e-1 on RAR-B-shaped random weights. bf16
//   weights keep 8 significant bits (<= 2^-9 relative each) and, for M > 8 rows, the
//   cuBLASLt / tensor-core GEMMs also round their fp32 input activations to bf16; the
//   CPU's bf16 path (weights only) measures 2.8e-3 on rar-tiny (bound 1.5e-2 there).
//   Run with RARGEN_CUBLASLT=0 to test the built-in GEMM kernels instead of cuBLASLt.
// - Greedy tokens (helpers.ts greedyAgreement): both backends teacher-forced on the CPU's
//   tokens; wherever the CPU's top-1 margin of the CFG-combined logits exceeds twice the
//   measured logit error the GPU must pick the same token, and its free-running tokens
//   must match up to each image's first near-tie. Near-ties are counted and printed.
// - The CUDA-graph decode (RARGEN_CUDA_GRAPHS=strict: a capture that falls back throws)
//   against the direct path (RARGEN_CUDA_GRAPHS=0): 1e-6, the same kernels and arguments.
// Under RARGEN_GPU_STANDIN=cpu (bench/gpu.sh --dry-run) the CPU stands in for CUDA.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeModel } from '../../lib/native.js';
import { addon, f32, i32, npz, rarTinyConfig, scalar } from '../native/helpers.js';
import { GPU, greedyAgreement, hasCuda, RAR_B_UNDER_TEST, randomIds, randomRarWeights, rarModels, rarTinyWeights, scaledMaxDiff, STANDIN } from './helpers.js';

const tiny = rarTinyConfig();

function greedyOpts(classIds: number[], guidanceScale: number, guidanceScalePow: number) {
  return {
    classIds: Int32Array.from(classIds),
    guidanceScale,
    guidanceScalePow,
    temperature: 1,
    topK: 0,
    topP: 1,
    greedy: true,
    seed: '0',
    indexOffset: 0,
  };
}

describe.skipIf(!hasCuda)('CUDA vs CPU on rar-tiny (fixture weights)', () => {
  let cpu: NativeModel, gpu: NativeModel, gpu16: NativeModel; // model.bin
  let cpuT: NativeModel, gpuT: NativeModel, gpuT16: NativeModel; // adamw.npz parameters (decode.npz)
  beforeAll(async () => {
    [cpu, gpu, gpu16] = await rarModels(
      tiny,
      [
        { device: 'cpu', dtype: 'f32' },
        { device: GPU, dtype: 'f32' },
        { device: GPU, dtype: 'bf16' },
      ],
      rarTinyWeights('initial'),
    );
    [cpuT, gpuT, gpuT16] = await rarModels(
      tiny,
      [
        { device: 'cpu', dtype: 'f32' },
        { device: GPU, dtype: 'f32' },
        { device: GPU, dtype: 'bf16' },
      ],
      rarTinyWeights('trained'),
    );
  });
  afterAll(() => {
    for (const m of [cpu, gpu, gpu16, cpuT, gpuT, gpuT16]) if (m) addon.free(m);
  });

  it('training-path logits (forward.npz inputs): f32 within 1e-3, bf16 within 5e-2', async () => {
    const f = await npz('rar-tiny/forward.npz');
    const args = [i32(f.get('input_ids')), i32(f.get('condition')), i32(f.get('orders'))] as const;
    const ref = await addon.rarForward(cpu, ...args);
    const a = scaledMaxDiff(await addon.rarForward(gpu, ...args), ref);
    const b = scaledMaxDiff(await addon.rarForward(gpu16, ...args), ref);
    const fix = scaledMaxDiff(await addon.rarForward(gpu, ...args), f32(f.get('logits')));
    console.log(`rar-tiny forward: cuda f32 ${a.err.toExponential(3)}, cuda bf16 ${b.err.toExponential(3)} vs cpu; cuda f32 vs PyTorch ${fix.err.toExponential(3)}`);
    expect(a.err).toBeLessThan(1e-3);
    expect(fix.err).toBeLessThan(1e-3);
    expect(b.err).toBeLessThan(5e-2);
  });

  it('KV-cached step logits (decode.npz, conditional and null rows): f32 within 1e-3, bf16 within 5e-2', async () => {
    const d = await npz('rar-tiny/decode.npz');
    const N = tiny.seqLen;
    const ids = i32(d.get('input_ids'));
    const none = scalar(d.get('none_condition'));
    const ids6 = new Int32Array(6 * N);
    ids6.set(ids, 0);
    ids6.set(ids, 3 * N);
    const cond6 = Int32Array.from([...i32(d.get('condition')), none, none, none]);
    const ref = await addon.rarDecodeSteps(cpuT, ids6, cond6);
    const a = scaledMaxDiff(await addon.rarDecodeSteps(gpuT, ids6, cond6), ref);
    const b = scaledMaxDiff(await addon.rarDecodeSteps(gpuT16, ids6, cond6), ref);
    const fix = scaledMaxDiff(await addon.rarDecodeSteps(gpuT, ids6, cond6), f32(d.get('step_logits')));
    console.log(`rar-tiny decode steps: cuda f32 ${a.err.toExponential(3)}, cuda bf16 ${b.err.toExponential(3)} vs cpu; cuda f32 vs PyTorch ${fix.err.toExponential(3)}`);
    expect(a.err).toBeLessThan(1e-3);
    expect(fix.err).toBeLessThan(1e-3);
    expect(b.err).toBeLessThan(5e-2);
  });

  it("greedy CFG tokens: the CPU's at every decisive position (near-ties counted), and greedy_tokens", async () => {
    const d = await npz('rar-tiny/decode.npz');
    const classes = [...i32(d.get('greedy_class_labels'))];
    const g = scalar(d.get('greedy_guidance_scale')), p = scalar(d.get('greedy_guidance_scale_pow'));
    const a = await greedyAgreement(cpuT, gpuT, tiny, classes, g, p);
    console.log(`rar-tiny greedy: ${a.summary}`);
    expect(a.mismatches).toBe(0);
    expect(a.prefixAgrees).toBe(true);
    const onCpu = await addon.rarGenerate(cpuT, greedyOpts(classes, g, p));
    expect([...onCpu]).toEqual([...i32(d.get('greedy_tokens'))]); // the CPU reference vs PyTorch
  });

  it('sampling: same seed and uniforms give the same tokens on both backends (top-k, top-p, temperature)', async () => {
    // Inverse-CDF draws from the same uniforms; a token can only differ where a uniform
    // falls within rounding of a CDF step, so allow at most 1 of 5 x 16 tokens to differ.
    const opts = { ...greedyOpts([0, 3, 7, 9, 1], 4, 1.5), greedy: false, seed: '1234', topK: 10, topP: 0.95, temperature: 1.1 };
    const onCpu = await addon.rarGenerate(cpuT, opts);
    const onGpu = await addon.rarGenerate(gpuT, opts);
    // Tokens after the first difference are conditioned differently: compare up to it.
    let same = 0;
    for (let i = 0; i < onCpu.length; i++) if (onCpu[i] === onGpu[i]) same++;
    console.log(`rar-tiny sampling: ${same}/${onCpu.length} tokens identical`);
    expect(same).toBeGreaterThanOrEqual(onCpu.length - tiny.seqLen);
    const again = await addon.rarGenerate(gpuT, opts);
    expect([...again]).toEqual([...onGpu]); // deterministic on the GPU
  });
});

const RAR_B = RAR_B_UNDER_TEST;
describe.skipIf(!hasCuda)(`CUDA vs CPU on RAR-B-shaped random weights (C=${RAR_B.hiddenSize}, ${RAR_B.depth} blocks, ${RAR_B.numHeads} heads, V=1024)`, () => {
  let cpu: NativeModel, gpu: NativeModel, gpu16: NativeModel;
  beforeAll(async () => {
    [cpu, gpu, gpu16] = await rarModels(
      RAR_B,
      [
        { device: 'cpu', dtype: 'f32' },
        { device: GPU, dtype: 'f32' },
        { device: GPU, dtype: 'bf16' },
      ],
      randomRarWeights(RAR_B, 2024),
    );
  }, 600_000);
  afterAll(() => {
    for (const m of [cpu, gpu, gpu16]) if (m) addon.free(m);
  });

  const N = RAR_B.seqLen, V = RAR_B.codebookSize, K = RAR_B.numClasses;

  it('training-path logits, 2 images with a random order: f32 within 1e-3, bf16 within 1e-1', async () => {
    const ids = randomIds(2 * N, V, 5);
    const cond = Int32Array.from([V + 1 + 207, V + K + 1]);
    const orders = new Int32Array(2 * N);
    for (let k = 0; k < N; k++) orders[k] = k;
    const perm = randomIds(N, 1 << 30, 6);
    const rest = Array.from({ length: N }, (_, k) => k).sort((x, y) => perm[x] - perm[y]);
    orders.set(rest, N);
    const ref = await addon.rarForward(cpu, ids, cond, orders);
    const a = scaledMaxDiff(await addon.rarForward(gpu, ids, cond, orders), ref);
    const b = scaledMaxDiff(await addon.rarForward(gpu16, ids, cond, orders), ref);
    console.log(`RAR-B forward: cuda f32 ${a.err.toExponential(3)}, cuda bf16 ${b.err.toExponential(3)} (max |logit| ${a.scale.toFixed(2)})`);
    expect(a.err).toBeLessThan(1e-3);
    expect(b.err).toBeLessThan(1e-1);
  }, 600_000);

  it('every KV-cached step logit of one image: f32 within 1e-3', async () => {
    const ids = randomIds(N, V, 8);
    const cond = Int32Array.from([V + 1 + 42]);
    const ref = await addon.rarDecodeSteps(cpu, ids, cond);
    const a = scaledMaxDiff(await addon.rarDecodeSteps(gpu, ids, cond), ref);
    console.log(`RAR-B decode steps: cuda f32 ${a.err.toExponential(3)} (max |logit| ${a.scale.toFixed(2)})`);
    expect(a.err).toBeLessThan(1e-3);
  }, 600_000);

  it('KV cache on the device: every decode-step logit equals the full forward (raster order) within 1e-4', async () => {
    const B = 2;
    const ids = randomIds(B * N, V, 9);
    const cond = Int32Array.from([V + 1 + 3, V + K + 1]);
    const raster = new Int32Array(B * N).map((_, i) => i % N);
    const full = await addon.rarForward(gpu, ids, cond, raster); // (B, N+1, V)
    const steps = await addon.rarDecodeSteps(gpu, ids, cond); // (B, N, V)
    const f = new Float32Array(B * N * V);
    for (let b = 0; b < B; b++) f.set(full.subarray(b * (N + 1) * V, (b * (N + 1) + N) * V), b * N * V);
    const a = scaledMaxDiff(steps, f);
    console.log(`RAR-B ${GPU} KV-cached steps vs full forward: err ${a.err.toExponential(3)} (max |logit| ${a.scale.toFixed(2)})`);
    expect(a.err).toBeLessThan(1e-4);
  }, 600_000);

  it('CUDA-graph decode (strict: a capture that falls back throws) equals the direct path (RARGEN_CUDA_GRAPHS=0)', async () => {
    const ids = randomIds(3 * N, V, 10);
    const cond = Int32Array.from([V + 1 + 5, V + 1 + 6, V + K + 1]);
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
    const classes = Array.from({ length: BIG }, (_, i) => (i * 37) % K);
    const all = await addon.rarGenerate(gpu, greedyOpts(classes, 16, 2.75));
    // teacher-forced on the batch's tokens: image i inside the batch vs alone
    const ids = new Int32Array(2 * BIG * N);
    ids.set(all, 0);
    ids.set(all, BIG * N);
    const cond = Int32Array.from([...classes.map((k) => V + 1 + k), ...classes.map(() => V + K + 1)]);
    const inBatch = await addon.rarDecodeSteps(gpu, ids, cond);
    for (const i of [0, 17 % BIG, BIG - 1]) {
      const one = all.subarray(i * N, (i + 1) * N);
      const alone = await addon.rarDecodeSteps(gpu, Int32Array.from([...one, ...one]), Int32Array.from([V + 1 + classes[i]!, V + K + 1]));
      const rows = (r: Float32Array, a: number, b: number) => Float32Array.from([...r.subarray(a * N * V, (a + 1) * N * V), ...r.subarray(b * N * V, (b + 1) * N * V)]);
      const d = scaledMaxDiff(alone, rows(inBatch, i, BIG + i));
      console.log(`RAR-B image ${i}: alone vs in a batch of ${BIG}: logits err ${d.err.toExponential(3)}`);
      expect(d.err).toBeLessThan(1e-4);
    }
  }, 600_000);
});
