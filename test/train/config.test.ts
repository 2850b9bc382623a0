import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import {
  buildTrainConfig,
  generatorConfigOf,
  loadTrainConfig,
  parseOverride,
  parseOverrideValue,
  splitConfigArgs,
  TrainConfigError,
} from '../../lib/train/config.js';

const OFFICIAL = fileURLToPath(new URL('./fixtures/rar.yaml', import.meta.url));

describe('training config (official rar.yaml layout)', () => {
  it('loads the official file with YAML 1.1 numbers and ${} interpolation', () => {
    const { config: c, unknownKeys } = loadTrainConfig(OFFICIAL);
    expect(c.experiment.max_train_examples).toBe(1_281_167);
    expect(c.experiment.save_every).toBe(50_000);
    expect(c.experiment.resume).toBe(true);
    expect(c.model.generator.hidden_size).toBe(768);
    expect(c.model.generator.randomness_anneal_start).toBe(125_000);
    expect(c.model.generator.randomness_anneal_end).toBe(187_500);
    expect(c.model.vq_model.codebook_size).toBe(1024);
    expect(c.optimizer.params.learning_rate).toBe(4e-4);
    expect(c.optimizer.params.beta2).toBe(0.96);
    expect(c.lr_scheduler.params.learning_rate).toBe(4e-4); // ${optimizer.params.learning_rate}
    expect(c.lr_scheduler.params.warmup_steps).toBe(62_500);
    expect(c.lr_scheduler.params.end_lr).toBe(1e-5);
    expect(c.training.max_train_steps).toBe(250_000);
    expect(c.training.max_grad_norm).toBe(1.0);
    expect(c.training.mixed_precision).toBe('bf16');
    expect(c.dataset.preprocessing).toEqual({ resize_shorter_edge: 256, crop_size: 256, random_crop: false, random_flip: true });
    expect(unknownKeys).toEqual([]);
  });

  it('defaults equal MODEL.md when no file is given', () => {
    const { config: c } = buildTrainConfig('');
    expect(c.optimizer.params).toEqual({ learning_rate: 4e-4, beta1: 0.9, beta2: 0.96, weight_decay: 0.03, epsilon: 1e-8 });
    expect(c.lr_scheduler).toEqual({ scheduler: 'cosine', params: { learning_rate: 4e-4, warmup_steps: 62_500, end_lr: 1e-5 } });
    expect(c.model.generator.dropout).toBe(0.1);
    expect(c.model.generator.attn_drop).toBe(0.1);
    expect(c.model.generator.class_label_dropout).toBe(0.1);
    expect(c.training.max_grad_norm).toBe(1);
    expect(generatorConfigOf(c)).toEqual({
      hiddenSize: 768, depth: 24, numHeads: 16, headDim: 48, mlpDim: 3072, seqLen: 256,
      codebookSize: 1024, numClasses: 1000, posEmbedRows: 1280, timestepRows: 356,
    });
  });

  it("the scheduler's rate follows the optimizer's as rar.yaml interpolates it, with or without a file", () => {
    const peak = (yaml: string, overrides: string[]) => {
      const c = buildTrainConfig(yaml, overrides).config;
      return [c.optimizer.params.learning_rate, c.lr_scheduler.params.learning_rate];
    };
    // No file: the default carries the interpolation.
    expect(peak('', ['optimizer.params.learning_rate=1e-3'])).toEqual([1e-3, 1e-3]);
    // A file that sets only the optimizer's rate (the scheduler's falls back to the interpolation).
    expect(peak('optimizer:\n  params:\n    learning_rate: 2e-4\n', [])).toEqual([2e-4, 2e-4]);
    expect(peak('lr_scheduler:\n  params:\n    warmup_steps: 10\n', ['optimizer.params.learning_rate=3e-4'])).toEqual([3e-4, 3e-4]);
    // The official file, overridden on the command line.
    const f = loadTrainConfig(OFFICIAL, ['optimizer.params.learning_rate=1e-3']).config;
    expect([f.optimizer.params.learning_rate, f.lr_scheduler.params.learning_rate]).toEqual([1e-3, 1e-3]);
    // A file or override that sets the scheduler's rate replaces the interpolation.
    expect(peak('lr_scheduler:\n  params:\n    learning_rate: 1e-3\n', [])).toEqual([4e-4, 1e-3]);
    expect(peak('', ['lr_scheduler.params.learning_rate=5e-4'])).toEqual([4e-4, 5e-4]);
    expect(peak('', ['lr_scheduler.params.learning_rate=5e-4', 'optimizer.params.learning_rate=1e-4'])).toEqual([1e-4, 5e-4]);
  });

  it('cosine with lr_scheduler.params.learning_rate 0 is refused (the factor divides by it)', () => {
    expect(() => buildTrainConfig('', ['lr_scheduler.params.learning_rate=0'])).toThrow(/lr_scheduler\.params\.learning_rate: must be > 0 for the cosine scheduler/);
    expect(buildTrainConfig('', ['optimizer.params.learning_rate=0', 'lr_scheduler.params.learning_rate=1e-4']).config.optimizer.params.learning_rate).toBe(0);
    expect(buildTrainConfig('', ['lr_scheduler.scheduler=constant', 'lr_scheduler.params.learning_rate=0']).config.lr_scheduler.params.learning_rate).toBe(0);
  });

  it('training.mixed_precision=no (YAML 1.1 false) is "no", on the command line and in a file', () => {
    expect(buildTrainConfig('', ['training.mixed_precision=no']).config.training.mixed_precision).toBe('no');
    expect(buildTrainConfig('training:\n  mixed_precision: no\n').config.training.mixed_precision).toBe('no');
    expect(buildTrainConfig('training:\n  mixed_precision: "no"\n').config.training.mixed_precision).toBe('no');
    expect(buildTrainConfig('', ['training.mixed_precision=fp16']).config.training.mixed_precision).toBe('fp16');
    // true (`yes`) names no precision: refused, naming the key and the value.
    expect(() => buildTrainConfig('', ['training.mixed_precision=yes'])).toThrow(/training\.mixed_precision: .*\(received true\)/);
  });

  it('types override values like OmegaConf', () => {
    expect(parseOverrideValue('3')).toBe(3);
    expect(parseOverrideValue('1_000')).toBe(1000);
    expect(parseOverrideValue('3.5')).toBe(3.5);
    expect(parseOverrideValue('4e-4')).toBe(4e-4);
    expect(parseOverrideValue('1e-5')).toBe(1e-5);
    expect(parseOverrideValue('true')).toBe(true);
    expect(parseOverrideValue('False')).toBe(false);
    expect(parseOverrideValue('null')).toBe(null);
    expect(parseOverrideValue('~')).toBe(null);
    expect(parseOverrideValue('rar-b')).toBe('rar-b');
    expect(parseOverrideValue('"123"')).toBe('123');
    expect(parseOverrideValue('./out/run:1')).toBe('./out/run:1');
    expect(parseOverrideValue('[1, 2]')).toEqual([1, 2]);
    expect(parseOverride('a.b.c=7')).toEqual({ key: ['a', 'b', 'c'], value: 7 });
    expect(() => parseOverride('novalue')).toThrow(/key=value/);
    expect(() => parseOverride('a..b=1')).toThrow(/malformed override key/);
  });

  it('applies overrides before interpolation, so dependent keys follow', () => {
    const { config: c } = loadTrainConfig(OFFICIAL, [
      'optimizer.params.learning_rate=1e-3',
      'training.per_gpu_batch_size=8',
      'experiment.name=123',
      'model.generator.num_hidden_layers=2',
      'training.max_grad_norm=null',
    ]);
    expect(c.optimizer.params.learning_rate).toBe(1e-3);
    expect(c.lr_scheduler.params.learning_rate).toBe(1e-3);
    expect(c.training.per_gpu_batch_size).toBe(8);
    expect(c.experiment.name).toBe('123');
    expect(c.model.generator.num_hidden_layers).toBe(2);
    expect(c.training.max_grad_norm).toBe(null);
  });

  it('reports every invalid value with its dotted key and what it received', () => {
    let msg = '';
    try {
      buildTrainConfig('', ['training.per_gpu_batch_size=-1', 'lr_scheduler.scheduler=linear', 'model.generator.dropout=1.5']);
    } catch (e) {
      expect(e).toBeInstanceOf(TrainConfigError);
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/3 invalid value/);
    expect(msg).toMatch(/training\.per_gpu_batch_size: .*\(received -1\)/);
    expect(msg).toMatch(/lr_scheduler\.scheduler: .*\(received "linear"\)/);
    expect(msg).toMatch(/model\.generator\.dropout: .*\(received 1\.5\)/);
  });

  it('checks cross-field constraints and interpolation errors', () => {
    expect(() => buildTrainConfig('', ['model.generator.hidden_size=100', 'model.generator.num_attention_heads=16'])).toThrow(
      /hidden_size 100 must be a multiple of num_attention_heads 16/,
    );
    expect(() => buildTrainConfig('', ['model.generator.randomness_anneal_start=10', 'model.generator.randomness_anneal_end=5'])).toThrow(
      /randomness_anneal_end 5 is before/,
    );
    expect(() => buildTrainConfig('a: ${b.c}\n')).toThrow(/names no key/);
    expect(() => buildTrainConfig('a: ${b}\nb: ${a}\n')).toThrow(/cycle/);
    expect(() => buildTrainConfig('- 1\n- 2\n')).toThrow(/mapping/);
  });

  it('lists keys it does not use instead of failing on them', () => {
    const r = buildTrainConfig('training:\n  foo: 1\nmodel:\n  generator:\n    perturb_mode: switch\n');
    expect(r.unknownKeys).toEqual(['model.generator.perturb_mode', 'training.foo']);
  });

  it('splits argv into config=FILE, overrides and the rest', () => {
    expect(splitConfigArgs(['config=a.yaml', 'training.seed=1', '--init', 'x.bin', '--no-shuffle', 'experiment.output_dir=/tmp/o'])).toEqual({
      configFile: 'a.yaml',
      overrides: ['training.seed=1', 'experiment.output_dir=/tmp/o'],
      rest: ['--init', 'x.bin', '--no-shuffle'],
    });
  });
});
