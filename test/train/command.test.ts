// `rargen train` (lib/commands/train.ts) in-process: help, usage errors naming the bad
// key, and a short run writing the JSONL log and a checkpoint that resumes.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../lib/native.js';
import { run } from '../../lib/commands/train.js';
import { UsageError } from '../../lib/commands/_shared.js';
import { writeDemoDataset } from '../../lib/demo/index.js';

const hasTrainer = typeof (native() as unknown as { createTrainer?: unknown }).createTrainer === 'function';
let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rargen-cmd-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('rargen train', () => {
  it('prints help', async () => {
    const writes: string[] = [];
    const orig = process.stdout.write.bind(process.stdout);
    (process.stdout as unknown as { write: (s: string) => boolean }).write = (s: string) => (writes.push(s), true);
    try {
      expect(await run(['--help'])).toBe(0);
    } finally {
      (process.stdout as unknown as { write: typeof orig }).write = orig;
    }
    expect(writes.join('')).toMatch(/Usage: rargen train config=FILE\.yaml/);
  });

  it('rejects bad overrides and arguments with usage errors', async () => {
    await expect(run(['training.per_gpu_batch_size=0'])).rejects.toThrow(UsageError);
    await expect(run(['training.per_gpu_batch_size=0'])).rejects.toThrow(/training\.per_gpu_batch_size/);
    await expect(run(['stray'])).rejects.toThrow(/unexpected argument "stray"/);
    await expect(run(['--steps', '0'])).rejects.toThrow(/--steps expects an integer >= 1/);
    await expect(run(['--bogus'])).rejects.toThrow(UsageError);
  });

  it.skipIf(!hasTrainer)('trains from a config file with overrides, logs JSONL, saves and resumes', async () => {
    const data = join(dir, 'demo.jsonl');
    await writeDemoDataset(data, 64, 1);
    const yaml = join(dir, 'cfg.yaml');
    writeFileSync(
      yaml,
      [
        'model:',
        '  vq_model: {codebook_size: 16}',
        '  generator: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, image_seq_len: 256, condition_num_classes: 10}',
        'dataset:',
        `  params: {pretokenization: "${data}"}`,
        'training: {per_gpu_batch_size: 2, max_train_steps: 4}',
        'lr_scheduler: {params: {warmup_steps: 1}}',
      ].join('\n'),
    );
    const out = join(dir, 'run');
    const log = join(dir, 'log.jsonl');
    const args = [`config=${yaml}`, `experiment.output_dir=${out}`, 'experiment.save_every=2', '--device', 'cpu', '--log-jsonl', log];
    expect(await run([...args, '--steps', '3'])).toBe(0);
    expect(existsSync(join(out, 'checkpoint-2', 'unwrapped_model', 'pytorch_model.bin'))).toBe(true);
    expect(existsSync(join(out, 'checkpoint-3', 'state.json'))).toBe(true);
    expect(existsSync(join(out, 'config.yaml'))).toBe(true);
    expect(await run(args)).toBe(0); // resumes at 3, runs step 4
    const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3, 4]);
    expect(lines[0].lr).toBe(0);
    expect(lines[1].lr).toBeCloseTo(4e-4, 12);
    expect(JSON.parse(readFileSync(join(out, 'checkpoint-4', 'state.json'), 'utf8')).step).toBe(4);
  });

  it.skipIf(!hasTrainer)('without a config file: optimizer.params.learning_rate sets the peak, and mixed_precision=no runs', async () => {
    const data = join(dir, 'demo-nocfg.jsonl');
    await writeDemoDataset(data, 16, 1);
    const tiny = [
      'model.vq_model.codebook_size=16',
      'model.generator.hidden_size=32',
      'model.generator.num_hidden_layers=1',
      'model.generator.num_attention_heads=2',
      'model.generator.intermediate_size=64',
      'model.generator.condition_num_classes=10',
      `dataset.params.pretokenization=${data}`,
      'training.per_gpu_batch_size=2',
      'training.max_train_steps=3',
      'lr_scheduler.params.warmup_steps=1',
      'training.mixed_precision=no',
      '--device',
      'cpu',
    ];
    const lrs = async (name: string, extra: string[]) => {
      const log = join(dir, `${name}.jsonl`);
      const errs: string[] = [];
      const orig = process.stderr.write.bind(process.stderr);
      (process.stderr as unknown as { write: (s: string) => boolean }).write = (s: string) => (errs.push(String(s)), true);
      try {
        expect(await run([...tiny, ...extra, `experiment.output_dir=${join(dir, name)}`, '--log-jsonl', log])).toBe(0);
      } finally {
        (process.stderr as unknown as { write: typeof orig }).write = orig;
      }
      return { lr: readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l).lr as number), stderr: errs.join('') };
    };
    const a = await lrs('nocfg', ['optimizer.params.learning_rate=1e-3']);
    expect(a.lr[0]).toBe(0);
    expect(a.lr[1]).toBeCloseTo(1e-3, 15); // not rar.yaml's 4e-4
    expect(a.lr[2]).toBeCloseTo(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + Math.cos(Math.PI / 2)), 15);
    expect(a.stderr).not.toMatch(/mixed_precision/); // "no" (YAML false) is float32, no warning
    // The two rates set differently: the official lr is the optimizer's times the factor.
    const b = await lrs('twolr', ['optimizer.params.learning_rate=1e-3', 'lr_scheduler.params.learning_rate=2e-3']);
    expect(b.lr[1]).toBeCloseTo(1e-3, 15);
    expect(b.lr[2]).toBeCloseTo((1e-3 * (1e-5 + (2e-3 - 1e-5) * 0.5)) / 2e-3, 15);
    expect(b.stderr).toMatch(/optimizer\.params\.learning_rate 0\.001 differs from lr_scheduler\.params\.learning_rate 0\.002/);
  });
});
