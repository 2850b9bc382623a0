// The native trainer against the official PyTorch code (test/fixtures/rar-tiny):
// forward.npz (logits, loss and every parameter's gradient, dropout 0) and adamw.npz
// (three clipped AdamW steps on the same batch). Regenerate the fixtures with the
// official 1d-tokenizer code as test/fixtures/README.md describes.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readNpz, type NpyArray } from '../../lib/io/index.js';
import { Trainer } from '../../lib/train/native.js';
import { readGeneratorWeights } from '../../lib/train/loop.js';
import { RAR_TINY, hasTrainer, tinyConfig, i32, f32, relErr } from './helpers.js';

const FIX = RAR_TINY;
const f64 = (a: NpyArray | undefined) => Array.from(a!.data as ArrayLike<number>, Number);

async function tinyTrainer(): Promise<Trainer> {
  const cfg = tinyConfig();
  const t = new Trainer(cfg, 'cpu', { dropout: 0, attnDropout: 0 });
  for (const [n, w] of await readGeneratorWeights(join(FIX, 'model.bin'), cfg)) t.setTensor('param', n, w.data, w.shape);
  return t;
}

describe.skipIf(!hasTrainer)('native trainer vs the official PyTorch code (rar-tiny)', () => {
  it('fp32 CPU forward logits, loss and every parameter gradient match forward.npz', async () => {
    const f = await readNpz(join(FIX, 'forward.npz'));
    const t = await tinyTrainer();
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
      console.log(`trainer loss abs err ${Math.abs(res.loss - f64(f.get('loss'))[0]!).toExponential(3)}, logits rel ${relErr(res.logits!, f32(f.get('logits'))).toExponential(3)}`);
      expect(Math.abs(res.loss - f64(f.get('loss'))[0]!)).toBeLessThan(3.5e-7); // measured 1.1e-7
      expect(res.count).toBe(3 * 16);
      expect(relErr(res.logits!, f32(f.get('logits')))).toBeLessThan(1e-6); // measured 3.0e-7
      // Every parameter within 2.5e-6 of its tensor's max |gradient| (worst measured
      // 8.1e-7). The k_norm biases are the exception that proves the rule: adding a
      // constant to every key shifts all scores of a query equally and softmax ignores
      // it, so their true gradient is exactly 0 and both sides hold only float noise; for
      // those (reference max below 1e-6 of the model's max) ours must stay below 1e-8 of
      // the model's max (measured 2.2e-9).
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
          expect(Math.max(...mine.map(Math.abs)), `grad ${name}`).toBeLessThan(1e-8 * globalMax); // measured 2.2e-9
          continue;
        }
        worstGrad = Math.max(worstGrad, relErr(mine, ref));
        expect(relErr(mine, ref), `grad ${name}`).toBeLessThan(2.5e-6);
        checked++;
      }
      console.log(`trainer grads: worst rel ${worstGrad.toExponential(3)}, k_norm floor ${worstFloor.toExponential(3)}`);
      expect(checked).toBe(t.info.names.length - tinyConfig().depth);
      // a second call without zeroGrad doubles the gradients
      const g1 = t.getTensor('grad', 'lm_head.weight');
      await t.forwardBackward({ ids: i32(f.get('input_ids')), condition: i32(f.get('condition')), orders: i32(f.get('orders')), dropoutSeed: [0, 0], lossScale: 1, zeroGrad: false });
      const g2 = t.getTensor('grad', 'lm_head.weight');
      console.log(`trainer grad doubling rel ${relErr(g2, g1.map((x) => 2 * x)).toExponential(3)}`);
      expect(relErr(g2, g1.map((x) => 2 * x))).toBe(0); // the same sum added twice: exact
    } finally {
      t.free();
    }
  });

  it('three clipped AdamW steps match adamw.npz (losses, grad norms, every parameter)', async () => {
    const f = await readNpz(join(FIX, 'forward.npz'));
    const a = await readNpz(join(FIX, 'adamw.npz'));
    const t = await tinyTrainer();
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
      console.log(`adamw losses err ${losses.map((l, i) => Math.abs(l - refL[i]!).toExponential(2))}, norms rel ${norms.map((l, i) => (Math.abs(l - refN[i]!) / refN[i]!).toExponential(2))}`);
      for (let i = 0; i < 3; i++) {
        expect(Math.abs(losses[i]! - refL[i]!)).toBeLessThan(7e-7); // measured <= 2.4e-7
        expect(Math.abs(norms[i]! - refN[i]!) / refN[i]!).toBeLessThan(4.5e-8); // measured <= 1.4e-8
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
        expect(relErr(mine, ref), `param ${n}`).toBeLessThan(1e-5); // worst measured 3.2e-6
      }
      console.log(`adamw params worst rel ${worstParam.toExponential(3)}, k_norm bias steps ${worstK.toExponential(3)}`);
    } finally {
      t.free();
    }
  });

  it('with dropout on, the gradient equals central finite differences of the same (seeded) loss', async () => {
    const f = await readNpz(join(FIX, 'forward.npz'));
    const cfg = tinyConfig();
    const t = new Trainer(cfg, 'cpu', { dropout: 0.3, attnDropout: 0.3 });
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
});
