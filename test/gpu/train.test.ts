// The native trainer on the CUDA backend (the training kernels of cuda/, cuda/README.md "Training") against the CPU backend
// (the reference, itself checked against the official PyTorch code in
// test/train/native.test.ts): same weights (rar-tiny model.bin), same batch
// (forward.npz), through lib/train/native.ts. Skipped, saying why, where no usable GPU
// is present (CI).
//
// Tolerances: both backends compute in fp32 with fp32/double accumulation; only the
// summation order and libm rounding differ (typically 1e-6..1e-5 relative), so
// - loss: 1e-5 absolute; logits: 1e-4 of their max;
// - every parameter gradient within 1e-4 of its tensor's max |gradient|, except the
//   attn.k_norm biases, whose true gradient is exactly 0 (softmax ignores a shift of
//   every key; see test/train/native.test.ts) and where both sides hold float noise:
//   both must stay below 1e-6 of the model's largest gradient;
// - three clipped AdamW steps: losses 1e-5, grad norms 1e-5 relative, parameters 1e-4
//   of their tensor's max (k_norm biases: within the lr-per-step bound of their start).
// The CUDA ops are deterministic (no atomics), so two identical calls must give
// bitwise identical gradients.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readNpz } from '../../lib/io/index.js';
import { Trainer, type NativeTrainBatch } from '../../lib/train/native.js';
import { readGeneratorWeights } from '../../lib/train/loop.js';
import { GPU, hasCuda, skipReason, STANDIN } from './helpers.js';
import { RAR_TINY, hasTrainer, tinyConfig, i32, maxAbs, relErr } from '../train/helpers.js';

const FIX = RAR_TINY;
const run = hasCuda && hasTrainer;
if (!run) console.log(`test/gpu/train: skipped: ${hasCuda ? 'the addon has no training functions' : skipReason}`);

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const isKNormBias = (n: string) => /attn\.k_norm\.bias$/.test(n);

describe.skipIf(!run)('training on CUDA vs CPU (rar-tiny)', () => {
  const cfg = tinyConfig();
  let init: Awaited<ReturnType<typeof readGeneratorWeights>>;
  let batch: NativeTrainBatch;
  const trainers: Trainer[] = [];

  function make(device: 'cpu' | 'cuda', dropout = 0, attnDropout = 0): Trainer {
    const t = new Trainer(cfg, device, { dropout, attnDropout });
    trainers.push(t);
    for (const [n, w] of init) t.setTensor('param', n, w.data, w.shape);
    return t;
  }

  beforeAll(async () => {
    init = await readGeneratorWeights(join(FIX, 'model.bin'), cfg);
    const f = await readNpz(join(FIX, 'forward.npz'));
    batch = { ids: i32(f.get('input_ids')), condition: i32(f.get('condition')), orders: i32(f.get('orders')), dropoutSeed: [0, 0], lossScale: 1, zeroGrad: true };
  });
  afterAll(() => {
    for (const t of trainers) t.free();
  });

  function compareGrads(cpu: Trainer, gpu: Trainer, label: string): void {
    const names = cpu.info.names;
    const ref = new Map(names.map((n) => [n, cpu.getTensor('grad', n)]));
    const globalMax = Math.max(...[...ref.values()].map(maxAbs));
    let worst = 0;
    let worstName = '';
    for (const n of names) {
      const mine = gpu.getTensor('grad', n);
      const r = ref.get(n)!;
      if (isKNormBias(n)) {
        expect(maxAbs(mine), `${label}: grad ${n} (zero true gradient)`).toBeLessThan(1e-6 * globalMax);
        continue;
      }
      const e = relErr(mine, r);
      if (e > worst) [worst, worstName] = [e, n];
      expect(e, `${label}: grad ${n}`).toBeLessThan(1e-4);
    }
    console.log(`${label}: worst gradient ${worstName} ${worst.toExponential(3)} (relative to its max)`);
  }

  it('fp32 forward/backward: loss, logits and every parameter gradient match the CPU; deterministic', async () => {
    const cpu = make('cpu');
    const gpu = make(GPU);
    expect(gpu.info.device).toMatch(STANDIN ? /^cpu/ : /^cuda/);
    const a = await cpu.forwardBackward({ ...batch, returnLogits: true });
    const b = await gpu.forwardBackward({ ...batch, returnLogits: true });
    expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-5);
    expect(b.count).toBe(a.count);
    expect(b.correct).toBe(a.correct);
    expect(relErr(b.logits!, a.logits!)).toBeLessThan(1e-4);
    compareGrads(cpu, gpu, 'cuda vs cpu (no dropout)');
    // same call again: bitwise the same gradients (no atomics)
    const g1 = gpu.info.names.map((n) => gpu.getTensor('grad', n));
    const c = await gpu.forwardBackward(batch);
    expect(c.loss).toBe(b.loss);
    gpu.info.names.forEach((n, i) => expect(bytes(gpu.getTensor('grad', n)).equals(bytes(g1[i]!)), `bitwise ${n}`).toBe(true));
    // without zeroGrad the gradients double
    await gpu.forwardBackward({ ...batch, zeroGrad: false });
    expect(relErr(gpu.getTensor('grad', 'lm_head.weight'), g1[gpu.info.names.indexOf('lm_head.weight')]!.map((x) => 2 * x))).toBeLessThan(1e-6);
  });

  it('with dropout (0.3, attention 0.3): the same masks as the CPU, so the same loss and gradients', async () => {
    const cpu = make('cpu', 0.3, 0.3);
    const gpu = make(GPU, 0.3, 0.3);
    const db = { ...batch, dropoutSeed: [12345, 678] as [number, number] };
    const a = await cpu.forwardBackward(db);
    const b = await gpu.forwardBackward(db);
    expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-5);
    compareGrads(cpu, gpu, 'cuda vs cpu (dropout)');
    const other = await gpu.forwardBackward({ ...db, dropoutSeed: [1, 2] });
    expect(other.loss).not.toBe(b.loss);
  });

  it('three clipped AdamW steps: losses, grad norms and every parameter match the CPU', async () => {
    const cpu = make('cpu');
    const gpu = make(GPU);
    const opt = { lr: 1e-3, beta1: 0.9, beta2: 0.96, eps: 1e-8, weightDecay: 0.03, maxGradNorm: 1 };
    for (let step = 1; step <= 3; step++) {
      const la = (await cpu.forwardBackward(batch)).loss;
      const lb = (await gpu.forwardBackward(batch)).loss;
      expect(Math.abs(lb - la), `loss at step ${step}`).toBeLessThan(1e-5);
      const na = (await cpu.optimizerStep({ ...opt, step })).gradNorm;
      const nb = (await gpu.optimizerStep({ ...opt, step })).gradNorm;
      expect(Math.abs(nb - na) / na, `grad norm at step ${step}`).toBeLessThan(1e-5);
    }
    let worst = 0;
    for (const n of cpu.info.names) {
      const mine = gpu.getTensor('param', n);
      const ref = cpu.getTensor('param', n);
      if (isKNormBias(n)) {
        // zero true gradient: Adam turns noise into steps of at most lr each, on both sides
        const w0 = init.get(n)!.data;
        for (let i = 0; i < mine.length; i++) expect(Math.abs(mine[i]! - w0[i]!), n).toBeLessThan(3.1e-3);
        continue;
      }
      const e = relErr(mine, ref);
      worst = Math.max(worst, e);
      expect(e, `param ${n}`).toBeLessThan(1e-4);
      for (const kind of ['exp_avg', 'exp_avg_sq'] as const) expect(relErr(gpu.getTensor(kind, n), cpu.getTensor(kind, n)), `${kind} ${n}`).toBeLessThan(1e-3);
    }
    console.log(`cuda vs cpu after 3 AdamW steps: worst parameter ${worst.toExponential(3)}`);
  });
});
