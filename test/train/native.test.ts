// The native trainer on every available device (test/gpu/helpers.ts DEVICES: the CPU
// always, CUDA when the addon reports a usable GPU; the cuda variants are skipped,
// saying why, elsewhere) against the official PyTorch code (test/fixtures/rar-tiny):
// forward.npz (logits, loss and every parameter's gradient, dropout 0) and adamw.npz
// (three clipped AdamW steps on the same batch), finite differences with dropout; on the
// devices other than the CPU also against the CPU backend (the reference): same weights
// (model.bin), same batch (forward.npz), through lib/train/native.ts. Regenerate the
// fixtures with the official 1d-tokenizer code as test/fixtures/README.md describes.
//
// Tolerances: cpu vs PyTorch: the bounds below (measured, ~3x). Other devices vs the
// CPU: both compute in fp32 with fp32/double accumulation; only the summation order and
// libm rounding differ (typically 1e-6..1e-5 relative), so
// - loss: 1e-5 absolute; logits: 1e-4 of their max;
// - every parameter gradient within 1e-4 of its tensor's max |gradient|, except the
//   attn.k_norm biases, whose true gradient is exactly 0 (softmax ignores a shift of
//   every key; see below) and where both sides hold float noise: both must stay below
//   1e-6 of the model's largest gradient;
// - three clipped AdamW steps: losses 1e-5, grad norms 1e-5 relative, parameters 1e-4
//   of their tensor's max (k_norm biases: within the lr-per-step bound of their start);
// and vs PyTorch the CPU's bound plus that one. The CUDA ops are deterministic (no
// atomics), so two identical calls must give bitwise identical gradients.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import { readNpz, type NpyArray } from '../../lib/io/index.js';
import { Trainer, type NativeTrainBatch } from '../../lib/train/native.js';
import { readGeneratorWeights } from '../../lib/train/loop.js';
import { RAR_TINY, hasTrainer, tinyConfig, i32, f32, maxAbs, relErr } from './helpers.js';
import { describeDevices, notTheReference, STANDIN, type Device } from '../gpu/helpers.js';

const FIX = RAR_TINY;
const f64 = (a: NpyArray | undefined) => Array.from(a!.data as ArrayLike<number>, Number);

const noTrainer = () => (hasTrainer ? undefined : 'the addon has no training functions');

async function tinyTrainer(device: Device['device']): Promise<Trainer> {
  const cfg = tinyConfig();
  const t = new Trainer(cfg, device, { dropout: 0, attnDropout: 0 });
  for (const [n, w] of await readGeneratorWeights(join(FIX, 'model.bin'), cfg)) t.setTensor('param', n, w.data, w.shape);
  return t;
}

describeDevices('native trainer vs the official PyTorch code (rar-tiny)', (dev) => {
  const onCpu = dev.name === 'cpu';
  // elsewhere: the CPU's bound plus the device-vs-CPU bound of the header
  const tol = (cpu: number, vsCpu: number) => (onCpu ? cpu : cpu + vsCpu);

  it('fp32 forward logits, loss and every parameter gradient match forward.npz', async () => {
    const f = await readNpz(join(FIX, 'forward.npz'));
    const t = await tinyTrainer(dev.device);
    try {
      const res = await t.forwardBackward({
        ids: i32(f.get('input_ids')),
        condition: i32(f.get('condition')),
        orders: i32(f.get('orders')),
        dropoutSeed: [0, 0],
        lossScale: 1,
        zeroGrad: true,
        returnLogits: true,
      });
      console.log(`${dev.name} trainer loss abs err ${Math.abs(res.loss - f64(f.get('loss'))[0]!).toExponential(3)}, logits rel ${relErr(res.logits!, f32(f.get('logits'))).toExponential(3)}`);
      expect(Math.abs(res.loss - f64(f.get('loss'))[0]!)).toBeLessThan(tol(3.5e-7, 1e-5)); // cpu: measured 9.9e-8
      expect(res.count).toBe(3 * 16);
      expect(relErr(res.logits!, f32(f.get('logits')))).toBeLessThan(tol(1e-6, 1e-4)); // cpu: measured 3.7e-7
      // Every parameter within 2.5e-6 of its tensor's max |gradient| (worst measured
      // 5.7e-7). The k_norm biases are the exception that proves the rule: adding a
      // constant to every key shifts all scores of a query equally and softmax ignores
      // it, so their true gradient is exactly 0 and both sides hold only float noise; for
      // those (reference max below 1e-6 of the model's max) ours must stay below 1e-8 of
      // the model's max (measured 3.1e-9).
      const globalMax = Math.max(...t.info.names.map((n) => Math.max(...f32(f.get(`grad.${n}`)).map(Math.abs))));
      let checked = 0;
      let worstGrad = 0;
      let worstFloor = 0;
      for (const name of t.info.names) {
        const ref = f32(f.get(`grad.${name}`));
        expect(ref, `fixture gradient for ${name}`).toBeDefined();
        const mine = t.getTensor('grad', name);
        const refMax = Math.max(...ref.map(Math.abs));
        if (refMax < 1e-6 * globalMax) {
          expect(name).toMatch(/attn\.k_norm\.bias$/);
          worstFloor = Math.max(worstFloor, Math.max(...mine.map(Math.abs)) / globalMax);
          expect(Math.max(...mine.map(Math.abs)), `grad ${name}`).toBeLessThan((onCpu ? 1e-8 : 1e-6) * globalMax); // cpu: measured 2.2e-9
          continue;
        }
        worstGrad = Math.max(worstGrad, relErr(mine, ref));
        expect(relErr(mine, ref), `grad ${name}`).toBeLessThan(tol(2.5e-6, 1e-4));
        checked++;
      }
      console.log(`${dev.name} trainer grads: worst rel ${worstGrad.toExponential(3)}, k_norm floor ${worstFloor.toExponential(3)}`);
      expect(checked).toBe(t.info.names.length - tinyConfig().depth);
      // a second call without zeroGrad doubles the gradients
      const g1 = t.getTensor('grad', 'lm_head.weight');
      await t.forwardBackward({ ids: i32(f.get('input_ids')), condition: i32(f.get('condition')), orders: i32(f.get('orders')), dropoutSeed: [0, 0], lossScale: 1, zeroGrad: false });
      const g2 = t.getTensor('grad', 'lm_head.weight');
      console.log(`trainer grad doubling rel ${relErr(g2, g1.map((x) => 2 * x)).toExponential(3)}`);
      // the same sum added twice: exact on the CPU (elsewhere within 1e-6)
      expect(relErr(g2, g1.map((x) => 2 * x))).toBeLessThanOrEqual(onCpu ? 0 : 1e-6);
    } finally {
      t.free();
    }
  });

  it('three clipped AdamW steps match adamw.npz (losses, grad norms, every parameter)', async () => {
    const f = await readNpz(join(FIX, 'forward.npz'));
    const a = await readNpz(join(FIX, 'adamw.npz'));
    const t = await tinyTrainer(dev.device);
    try {
      // the official two parameter groups
      const names = a.get('names')!.data as string[];
      const decayed = f64(a.get('decayed'));
      names.forEach((n, i) => {
        expect(t.info.decayed[t.info.names.indexOf(n)], n).toBe(decayed[i] === 1);
      });
      const losses: number[] = [];
      const norms: number[] = [];
      for (let step = 1; step <= 3; step++) {
        const r = await t.forwardBackward({ ids: i32(f.get('input_ids')), condition: i32(f.get('condition')), orders: i32(f.get('orders')), dropoutSeed: [0, 0], lossScale: 1, zeroGrad: true });
        losses.push(r.loss);
        const { gradNorm } = await t.optimizerStep({ lr: 1e-3, beta1: 0.9, beta2: 0.96, eps: 1e-8, weightDecay: 0.03, maxGradNorm: 1, step });
        norms.push(gradNorm);
      }
      const refL = f64(a.get('losses'));
      const refN = f64(a.get('grad_norms'));
      console.log(`${dev.name} adamw losses err ${losses.map((l, i) => Math.abs(l - refL[i]!).toExponential(2))}, norms rel ${norms.map((l, i) => (Math.abs(l - refN[i]!) / refN[i]!).toExponential(2))}`);
      for (let i = 0; i < 3; i++) {
        expect(Math.abs(losses[i]! - refL[i]!)).toBeLessThan(tol(7e-7, 1e-5)); // cpu: measured <= 2.8e-7
        expect(Math.abs(norms[i]! - refN[i]!) / refN[i]!).toBeLessThan(tol(4.5e-8, 1e-5)); // cpu: measured <= 8.9e-9
      }
      const init = await readGeneratorWeights(join(FIX, 'model.bin'), tinyConfig());
      let worstParam = 0;
      let worstK = 0;
      for (const n of t.info.names) {
        const mine = t.getTensor('param', n);
        const ref = f32(a.get(`param.${n}`));
        if (/attn\.k_norm\.bias$/.test(n)) {
          // zero true gradient (see above): Adam turns the float noise into steps of at
          // most lr each, on both sides; check only that bound.
          const w0 = init.get(n)!.data;
          for (let i = 0; i < mine.length; i++) {
            worstK = Math.max(worstK, Math.abs(mine[i]! - w0[i]!), Math.abs(ref[i]! - w0[i]!));
            expect(Math.abs(mine[i]! - w0[i]!)).toBeLessThan(3.1e-3);
            expect(Math.abs(ref[i]! - w0[i]!)).toBeLessThan(3.1e-3);
          }
          continue;
        }
        worstParam = Math.max(worstParam, relErr(mine, ref));
        expect(relErr(mine, ref), `param ${n}`).toBeLessThan(tol(1e-5, 1e-4)); // cpu: worst measured 4.6e-6
      }
      console.log(`${dev.name} adamw params worst rel ${worstParam.toExponential(3)}, k_norm bias steps ${worstK.toExponential(3)}`);
    } finally {
      t.free();
    }
  });

  it('with dropout on, the gradient equals central finite differences of the same (seeded) loss', async () => {
    const f = await readNpz(join(FIX, 'forward.npz'));
    const cfg = tinyConfig();
    const t = new Trainer(cfg, dev.device, { dropout: 0.3, attnDropout: 0.3 });
    try {
      const w0 = await readGeneratorWeights(join(FIX, 'model.bin'), cfg);
      for (const [n, w] of w0) t.setTensor('param', n, w.data, w.shape);
      const batch = { ids: i32(f.get('input_ids')), condition: i32(f.get('condition')), orders: i32(f.get('orders')), dropoutSeed: [12345, 678] as [number, number], lossScale: 1, zeroGrad: true };
      const base = await t.forwardBackward(batch);
      expect((await t.forwardBackward(batch)).loss).toBe(base.loss); // same seed, same masks
      expect((await t.forwardBackward({ ...batch, dropoutSeed: [1, 2] })).loss).not.toBe(base.loss);
      await t.forwardBackward(batch);
      const names = ['blocks.0.attn.qkv.weight', 'blocks.1.mlp.fc1.weight', 'blocks.0.adaLN_modulation.1.weight', 'blocks.1.attn.proj.bias', 'pos_embed', 'embeddings.weight', 'lm_head.bias', 'blocks.0.attn.q_norm.weight'];
      for (const n of names) {
        const g = t.getTensor('grad', n);
        // the 3 largest-gradient elements of the tensor
        const idx = [...g.keys()].sort((a, b) => Math.abs(g[b]!) - Math.abs(g[a]!)).slice(0, 3);
        for (const i of idx) {
          const w = Float32Array.from(w0.get(n)!.data);
          const h = 3e-3; // float32 loss noise ~4e-7 / (2h) stays ~1e-4 of these gradients
          w[i] = w0.get(n)!.data[i]! + h;
          t.setTensor('param', n, w);
          const lp = (await t.forwardBackward(batch)).loss;
          w[i] = w0.get(n)!.data[i]! - h;
          t.setTensor('param', n, w);
          const lm = (await t.forwardBackward(batch)).loss;
          t.setTensor('param', n, Float32Array.from(w0.get(n)!.data));
          const fd = (lp - lm) / (2 * h);
          expect(Math.abs(fd - g[i]!), `${n}[${i}]: fd ${fd} vs grad ${g[i]}`).toBeLessThan(0.03 * Math.abs(g[i]!) + 3e-5);
        }
      }
    } finally {
      t.free();
    }
  });
}, noTrainer);

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const isKNormBias = (n: string) => /attn\.k_norm\.bias$/.test(n);

describeDevices('training vs the CPU (rar-tiny)', (dev) => {
  const cfg = tinyConfig();
  let init: Awaited<ReturnType<typeof readGeneratorWeights>>;
  let batch: NativeTrainBatch;
  const trainers: Trainer[] = [];

  function make(device: Device['device'], dropout = 0, attnDropout = 0): Trainer {
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
    const gpu = make(dev.device);
    expect(gpu.info.device).toMatch(STANDIN ? /^cpu/ : /^cuda/);
    const a = await cpu.forwardBackward({ ...batch, returnLogits: true });
    const b = await gpu.forwardBackward({ ...batch, returnLogits: true });
    expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-5);
    expect(b.count).toBe(a.count);
    expect(b.correct).toBe(a.correct);
    expect(relErr(b.logits!, a.logits!)).toBeLessThan(1e-4);
    compareGrads(cpu, gpu, `${dev.name} vs cpu (no dropout)`);
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
    const gpu = make(dev.device, 0.3, 0.3);
    const db = { ...batch, dropoutSeed: [12345, 678] as [number, number] };
    const a = await cpu.forwardBackward(db);
    const b = await gpu.forwardBackward(db);
    expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-5);
    compareGrads(cpu, gpu, `${dev.name} vs cpu (dropout)`);
    const other = await gpu.forwardBackward({ ...db, dropoutSeed: [1, 2] });
    expect(other.loss).not.toBe(b.loss);
  });

  it('three clipped AdamW steps: losses, grad norms and every parameter match the CPU', async () => {
    const cpu = make('cpu');
    const gpu = make(dev.device);
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
    console.log(`${dev.name} vs cpu after 3 AdamW steps: worst parameter ${worst.toExponential(3)}`);
  });
}, (d) => noTrainer() ?? notTheReference(d));
