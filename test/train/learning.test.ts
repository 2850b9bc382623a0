// End-to-end training through the loop (lib/train/loop.ts) on the CPU: a model learns
// class-structured synthetic data (loss far below ln V, greedy samples reproduce each
// class's pattern); a run stopped and resumed equals an uninterrupted one bit for bit.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../lib/native.js';
import { buildTrainConfig, generatorConfigOf } from '../../lib/train/config.js';
import { runTraining, readGeneratorWeights, type StepLog } from '../../lib/train/loop.js';
import { latestCheckpoint, loadCheckpoint, MODEL_FILE } from '../../lib/train/checkpoint.js';
import { toNativeRarConfig } from '../../lib/config.js';
import { Rng } from '../../lib/train/rng.js';

const hasTrainer = typeof (native() as unknown as { createTrainer?: unknown }).createTrainer === 'function';

const V = 16;
const N = 16;
const K = 4;
/** Class k's pattern; each sample copies it with 10% of tokens replaced by noise. */
const PATTERNS = Array.from({ length: K }, (_, k) => {
  const r = new Rng(1000 + k);
  return Array.from({ length: N }, () => r.nextInt(V));
});

let dir = '';
let data = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rargen-learn-'));
  data = join(dir, 'data.jsonl');
  const r = new Rng(7);
  const lines: string[] = [];
  for (let i = 0; i < 2000; i++) {
    const k = r.nextInt(K);
    const toks = PATTERNS[k]!.map((t) => (r.nextFloat() < 0.1 ? r.nextInt(V) : t));
    lines.push(JSON.stringify({ class_id: k, tokens: toks }));
  }
  writeFileSync(data, lines.join('\n') + '\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function config(out: string, extra: string[] = []) {
  return buildTrainConfig('', [
    `experiment.output_dir=${out}`,
    'experiment.save_every=1000',
    'experiment.log_every=1000',
    'model.generator.hidden_size=32',
    'model.generator.num_hidden_layers=2',
    'model.generator.num_attention_heads=2',
    'model.generator.intermediate_size=64',
    `model.generator.image_seq_len=${N}`,
    `model.generator.condition_num_classes=${K}`,
    `model.vq_model.codebook_size=${V}`,
    'model.generator.randomness_anneal_start=0',
    'model.generator.randomness_anneal_end=150',
    `dataset.params.pretokenization=${data}`,
    'dataset.params.shuffle_buffer_size=256',
    'optimizer.params.learning_rate=3e-3',
    'lr_scheduler.params.warmup_steps=20',
    'lr_scheduler.params.end_lr=3e-4',
    'training.per_gpu_batch_size=32',
    'training.max_train_steps=250',
    'training.seed=3',
    ...extra,
  ]).config;
}

describe.skipIf(!hasTrainer)('training loop (CPU)', () => {
  it('learns class-structured data: loss well below ln(V), greedy samples reproduce each class', async () => {
    const out = join(dir, 'learn');
    const logs: StepLog[] = [];
    const cfg = config(out);
    const res = await runTraining({ config: cfg, device: 'cpu', logJsonl: join(dir, 'learn.jsonl'), print: () => {}, progress: false, onStep: (l) => logs.push(l) });
    expect(res.endStep).toBe(250);
    expect(logs.length).toBe(250);
    const first = logs.slice(0, 5).reduce((s, l) => s + l.loss, 0) / 5;
    const last = logs.slice(-20).reduce((s, l) => s + l.loss, 0) / 20;
    expect(first).toBeGreaterThan(0.9 * Math.log(V)); // starts near ln 16 = 2.77
    expect(last).toBeLessThan(0.45 * Math.log(V)); // noise floor ~0.6 nats
    expect(logs.at(-1)!.random_ratio).toBe(0);
    expect(logs[0]!.random_ratio).toBe(1);
    expect(logs[0]!.lr).toBe(0);
    // the JSONL log has one object per step
    const jl = readFileSync(join(dir, 'learn.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(jl.length).toBe(250);
    expect(Object.keys(jl[0])).toEqual(expect.arrayContaining(['step', 'loss', 'accuracy', 'lr', 'grad_norm', 'random_ratio']));

    // greedy samples from the saved model, with the inference model
    const gcfg = generatorConfigOf(cfg);
    const a = native();
    const m = a.createRar(toNativeRarConfig(gcfg), 'cpu', 'f32');
    try {
      const w = await readGeneratorWeights(join(res.lastCheckpoint!, MODEL_FILE), gcfg);
      for (const [n, t] of w) a.setWeight(m, n, t.data, t.shape);
      a.finalize(m);
      const classIds = Int32Array.from({ length: 2 * K }, (_, i) => i % K);
      const toks = await a.rarGenerate(m, {
        classIds, guidanceScale: 0, guidanceScalePow: 1, temperature: 1, topK: 0, topP: 1, greedy: true, seed: '0', indexOffset: 0,
      });
      for (let i = 0; i < classIds.length; i++) {
        const k = classIds[i]!;
        let agree = 0;
        for (let j = 0; j < N; j++) if (toks[i * N + j] === PATTERNS[k]![j]) agree++;
        expect(agree / N, `class ${k}`).toBeGreaterThanOrEqual(0.9);
      }
    } finally {
      a.free(m);
    }
  });

  it('a run stopped and resumed equals an uninterrupted run, bit for bit', async () => {
    const extra = ['training.max_train_steps=12', 'model.generator.randomness_anneal_end=8', 'model.generator.randomness_anneal_start=2'];
    const logsA: StepLog[] = [];
    const a = await runTraining({ config: config(join(dir, 'a'), extra), device: 'cpu', print: () => {}, progress: false, onStep: (l) => logsA.push(l) });
    expect(a.endStep).toBe(12);
    const logsB: StepLog[] = [];
    const b1 = await runTraining({ config: config(join(dir, 'b'), extra), device: 'cpu', print: () => {}, progress: false, stepsThisRun: 5, onStep: (l) => logsB.push(l) });
    expect(b1.endStep).toBe(5);
    const b2 = await runTraining({ config: config(join(dir, 'b'), extra), device: 'cpu', print: () => {}, progress: false, onStep: (l) => logsB.push(l) });
    expect(b2.resumedFrom).toBe(join(dir, 'b', 'checkpoint-5'));
    expect(b2.startStep).toBe(5);
    const strip = (l: StepLog) => ({ ...l, samples_per_s: 0 });
    expect(logsB.map(strip)).toEqual(logsA.map(strip));
    const ca = await loadCheckpoint((await latestCheckpoint(join(dir, 'a')))!);
    const cb = await loadCheckpoint((await latestCheckpoint(join(dir, 'b')))!);
    expect(cb.state.step).toBe(12);
    expect(cb.state.data).toEqual(ca.state.data);
    for (const [n, t] of ca.params) {
      expect(cb.params.get(n)!.data, n).toEqual(t.data);
      expect(cb.expAvgSq.get(n)!.data, n).toEqual(ca.expAvgSq.get(n)!.data);
    }
  });
});
