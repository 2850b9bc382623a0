// Training configuration in the official layout of bytedance/1d-tokenizer
// (`configs/training/generator/rar.yaml`): the same sections and key names, so an
// official config file loads unchanged, plus OmegaConf-style dot-list overrides
// (`training.per_gpu_batch_size=32`) on the command line.
//
// How OmegaConf reads such a file, and so how this module reads it:
// - YAML 1.1 (PyYAML): `1_281_167` is an int, `True`/`yes` are bools, `~`/`null` null;
//   OmegaConf's loader also takes `4e-4` as a float (the `yaml` package's 1.1 schema does).
// - an override's value is itself parsed as YAML: `a=3` int, `a=3.0` float, `a=true`
//   bool, `a=null` null, `a=[1,2]` a list, anything else a string (quotes keep a string).
// - `${a.b.c}` interpolations are resolved after the overrides are merged, so
//   `optimizer.params.learning_rate=1e-3` also moves `lr_scheduler.params.learning_rate`.
//   rar.yaml's interpolation `lr_scheduler.params.learning_rate: ${optimizer.params.learning_rate}`
//   is itself a default (DEFAULT_TREE): defaults < file < overrides are merged as
//   OmegaConf.merge would merge rar.yaml, the file and the command line, so it holds with
//   no file and with a file that sets only the optimizer's rate; a file or override that
//   sets the scheduler's rate replaces it (the two may then differ: see schedule.ts).
// - `training.mixed_precision: no` is YAML 1.1's false; it is taken as "no".
// Defaults are MODEL.md's (RAR-B on ImageNet); the schema validates every value and
// an error lists every problem at once, each with its dotted key.
import { readFileSync } from 'node:fs';
import { parse as parseYaml, parseDocument } from 'yaml';
import { z } from 'zod';
import { GeneratorConfigSchema, positionRows, type GeneratorConfig } from '../config.js';

// ---------------------------------------------------------------------------------
// Schema

/** A string field that also takes a YAML scalar (`name: 123` stays "123"). */
const str = z.preprocess((v) => (typeof v === 'number' || typeof v === 'boolean' ? String(v) : v), z.string());
const optStr = z.preprocess(
  (v) => (typeof v === 'number' || typeof v === 'boolean' ? String(v) : v === '' ? null : v),
  z.string().nullable(),
);
const int = z.number().int();
const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const prob = z.number().min(0).max(1);

const ExperimentSchema = z.object({
  project: str.default('rar_generation'),
  name: str.default('rar-b'),
  output_dir: str.default('./rar-b'),
  max_train_examples: posInt.default(1_281_167),
  save_every: posInt.default(50_000),
  eval_every: posInt.default(50_000),
  generate_every: posInt.default(5_000),
  log_every: posInt.default(50),
  log_grad_norm_every: posInt.default(1_000),
  resume: z.boolean().default(true),
  init_weight: optStr.default(null),
  tokenizer_checkpoint: optStr.default(null),
  generator_checkpoint: optStr.default(null),
  /** rargen: how many step checkpoints to keep in output_dir (older ones are deleted; 0 keeps all). */
  keep_last: nonNegInt.default(2),
});

const VqModelSchema = z.object({
  codebook_size: posInt.default(1024),
  token_size: posInt.default(256),
  num_latent_tokens: posInt.default(256),
  finetune_decoder: z.boolean().default(false),
  pretrained_tokenizer_weight: optStr.default('maskgit-vqgan-imagenet-f16-256.bin'),
});

const GeneratorSchema = z.object({
  hidden_size: posInt.default(768),
  num_hidden_layers: posInt.default(24),
  num_attention_heads: posInt.default(16),
  intermediate_size: posInt.default(3072),
  dropout: prob.default(0.1),
  attn_drop: prob.default(0.1),
  class_label_dropout: prob.default(0.1),
  image_seq_len: posInt.default(256),
  condition_num_classes: posInt.default(1000),
  randomize_temperature: z.number().positive().default(1.0),
  guidance_scale: z.number().min(0).default(16.0),
  guidance_scale_pow: z.number().min(0).default(2.75),
  use_checkpoint: z.boolean().default(false),
  randomness_anneal_start: nonNegInt.default(125_000),
  randomness_anneal_end: nonNegInt.default(187_500),
});

const DatasetSchema = z.object({
  params: z
    .object({
      pretokenization: optStr.default('maskgitvq.jsonl'),
      train_shards_path_or_url: optStr.default(null),
      eval_shards_path_or_url: optStr.default(null),
      num_workers_per_gpu: nonNegInt.default(12),
      /** rargen: samples held in the seeded shuffle buffer (0 or 1 = no shuffling). */
      shuffle_buffer_size: nonNegInt.default(65_536),
    })
    .prefault({}),
  // Image preprocessing for non-pretokenized data: kept as given, not used by rargen.
  preprocessing: z.record(z.string(), z.unknown()).default({}),
});

const OptimizerSchema = z.object({
  name: z.literal('adamw').default('adamw'),
  params: z
    .object({
      learning_rate: z.number().nonnegative().default(4e-4),
      beta1: z.number().min(0).lt(1).default(0.9),
      beta2: z.number().min(0).lt(1).default(0.96),
      weight_decay: z.number().nonnegative().default(0.03),
      /** rargen: AdamW epsilon (PyTorch's default). */
      epsilon: z.number().positive().default(1e-8),
    })
    .prefault({}),
});

export const SCHEDULERS = ['cosine', 'constant', 'constant_with_warmup'] as const;
export type SchedulerName = (typeof SCHEDULERS)[number];

const LrSchedulerSchema = z.object({
  scheduler: z.enum(SCHEDULERS).default('cosine'),
  params: z
    .object({
      learning_rate: z.number().nonnegative().default(4e-4),
      warmup_steps: nonNegInt.default(62_500),
      end_lr: z.number().nonnegative().default(1e-5),
    })
    .prefault({}),
});

const TrainingSchema = z.object({
  gradient_accumulation_steps: posInt.default(1),
  per_gpu_batch_size: posInt.default(64),
  // A bare `no` (file or command line) reads as false under YAML 1.1, as OmegaConf reads it.
  mixed_precision: z.preprocess((v) => (v === false ? 'no' : v), z.enum(['no', 'fp16', 'bf16'])).default('bf16'),
  enable_tf32: z.boolean().default(true),
  enable_wandb: z.boolean().default(false),
  use_ema: z.boolean().default(false),
  seed: int.default(42),
  max_train_steps: posInt.default(250_000),
  max_grad_norm: z.number().nonnegative().nullable().default(1.0),
});

export const TrainConfigSchema = z
  .object({
    experiment: ExperimentSchema.prefault({}),
    model: z
      .object({
        vq_model: VqModelSchema.prefault({}),
        generator: GeneratorSchema.prefault({}),
      })
      .prefault({}),
    dataset: DatasetSchema.prefault({}),
    optimizer: OptimizerSchema.prefault({}),
    lr_scheduler: LrSchedulerSchema.prefault({}),
    training: TrainingSchema.prefault({}),
  })
  .superRefine((c, ctx) => {
    const g = c.model.generator;
    if (g.hidden_size % g.num_attention_heads !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['model', 'generator', 'num_attention_heads'],
        message: `hidden_size ${g.hidden_size} must be a multiple of num_attention_heads ${g.num_attention_heads}`,
      });
    if (g.randomness_anneal_end < g.randomness_anneal_start)
      ctx.addIssue({
        code: 'custom',
        path: ['model', 'generator', 'randomness_anneal_end'],
        message: `randomness_anneal_end ${g.randomness_anneal_end} is before randomness_anneal_start ${g.randomness_anneal_start}`,
      });
    if (c.lr_scheduler.scheduler === 'cosine' && !(c.lr_scheduler.params.learning_rate > 0))
      ctx.addIssue({
        code: 'custom',
        path: ['lr_scheduler', 'params', 'learning_rate'],
        message:
          'must be > 0 for the cosine scheduler (its factor (end_lr + (learning_rate - end_lr) * ratio) / learning_rate divides by it); ' +
          'set optimizer.params.learning_rate=0 to train with lr 0',
      });
    if (c.model.vq_model.codebook_size > 65_535)
      ctx.addIssue({
        code: 'custom',
        path: ['model', 'vq_model', 'codebook_size'],
        message: `codebook_size ${c.model.vq_model.codebook_size} does not fit the 16-bit token store (max 65535)`,
      });
  });

export type TrainConfig = z.output<typeof TrainConfigSchema>;

/** An invalid config file, override or value; the message lists every problem. */
export class TrainConfigError extends Error {
  override name = 'TrainConfigError';
  readonly code = 'RARGEN_TRAIN_CONFIG';
}

// ---------------------------------------------------------------------------------
// Overrides

type Tree = Record<string, unknown>;

function isTree(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The value of one override, typed as OmegaConf types it (YAML 1.1 scalar rules). */
export function parseOverrideValue(text: string): unknown {
  if (text === '') return '';
  try {
    const doc = parseDocument(text, { version: '1.1' });
    if (doc.errors.length) return text;
    const v = doc.toJS();
    // A bare word with a colon or a '#' could parse as a map or comment: keep strings.
    if (isTree(v)) return text;
    return v === undefined ? text : v;
  } catch {
    return text;
  }
}

export interface Override {
  key: string[];
  value: unknown;
}

/** Parses `a.b.c=value` (one argv word); throws naming the word when it is malformed. */
export function parseOverride(word: string): Override {
  const eq = word.indexOf('=');
  if (eq <= 0) throw new TrainConfigError(`expected an override key=value (e.g. training.seed=1) but received "${word}"`);
  const path = word.slice(0, eq).trim();
  const key = path.split('.');
  if (key.some((k) => k === '' || !/^[A-Za-z0-9_\-]+$/.test(k)))
    throw new TrainConfigError(`malformed override key "${path}" in "${word}": expected dotted names like training.per_gpu_batch_size`);
  return { key, value: parseOverrideValue(word.slice(eq + 1)) };
}

/** Sets `value` at `key` in `tree` (creating maps on the way), in place. */
export function applyOverride(tree: Tree, o: Override): void {
  let t = tree;
  for (let i = 0; i < o.key.length - 1; i++) {
    const k = o.key[i]!;
    if (!isTree(t[k])) {
      if (t[k] !== undefined && t[k] !== null)
        throw new TrainConfigError(`override ${o.key.join('.')}: ${o.key.slice(0, i + 1).join('.')} is a value, not a section`);
      t[k] = {};
    }
    t = t[k] as Tree;
  }
  t[o.key[o.key.length - 1]!] = o.value;
}

// ---------------------------------------------------------------------------------
// Interpolation (${a.b.c})

const INTERP = /\$\{([^}]+)\}/g;

function lookup(root: Tree, path: string): unknown {
  let v: unknown = root;
  for (const k of path.trim().split('.')) {
    if (!isTree(v) || !(k in v)) return undefined;
    v = v[k];
  }
  return v;
}

/** Resolves every `${path}` in place; a string that is one interpolation takes the target's type. */
export function resolveInterpolations(root: Tree): void {
  const resolving = new Set<string>();
  const resolveValue = (v: unknown, where: string): unknown => {
    if (typeof v === 'string' && v.includes('${')) {
      const whole = /^\$\{([^}]+)\}$/.exec(v);
      const get = (p: string): unknown => {
        const target = p.trim();
        if (resolving.has(target)) throw new TrainConfigError(`${where}: interpolation cycle through \${${target}}`);
        const raw = lookup(root, target);
        if (raw === undefined) throw new TrainConfigError(`${where}: interpolation \${${target}} names no key`);
        resolving.add(target);
        try {
          return resolveValue(raw, target);
        } finally {
          resolving.delete(target);
        }
      };
      if (whole) return get(whole[1]!);
      return v.replace(INTERP, (_m, p: string) => String(get(p)));
    }
    if (isTree(v)) {
      for (const k of Object.keys(v)) v[k] = resolveValue(v[k], where ? `${where}.${k}` : k);
      return v;
    }
    if (Array.isArray(v)) return v.map((x, i) => resolveValue(x, `${where}[${i}]`));
    return v;
  };
  resolveValue(root, '');
}

// ---------------------------------------------------------------------------------
// Loading

function unknownKeys(input: unknown, parsed: unknown, prefix: string, out: string[]): void {
  if (!isTree(input) || !isTree(parsed)) return;
  for (const k of Object.keys(input)) {
    const p = prefix ? `${prefix}.${k}` : k;
    if (!(k in parsed)) out.push(p);
    else unknownKeys(input[k], parsed[k], p, out);
  }
}

export interface LoadedTrainConfig {
  config: TrainConfig;
  /** Keys in the file or overrides that rargen does not use (kept out of `config`). */
  unknownKeys: string[];
}

/**
 * The defaults that are not plain values: rar.yaml's interpolation of the scheduler's rate
 * (and the optimizer rate it names, the schema's default). Merged under the file.
 */
function defaultTree(): Tree {
  return {
    optimizer: { params: { learning_rate: OptimizerSchema.parse({}).params.learning_rate } },
    lr_scheduler: { params: { learning_rate: '${optimizer.params.learning_rate}' } },
  };
}

/** Sets in `tree` every key of `defaults` that `tree` lacks (deeply), in place. */
function mergeUnder(tree: Tree, defaults: Tree): void {
  for (const [k, d] of Object.entries(defaults)) {
    if (tree[k] === undefined) tree[k] = d;
    else if (isTree(tree[k]) && isTree(d)) mergeUnder(tree[k] as Tree, d);
  }
}

/**
 * Builds a config from a YAML text (may be empty: all defaults) and override words.
 * Throws a TrainConfigError listing every invalid value with its dotted key.
 */
export function buildTrainConfig(yamlText: string, overrides: readonly string[] = [], source = 'config'): LoadedTrainConfig {
  let tree: unknown;
  try {
    tree = yamlText.trim() === '' ? {} : parseYaml(yamlText, { version: '1.1' });
  } catch (err) {
    throw new TrainConfigError(`${source}: invalid YAML: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (tree === null || tree === undefined) tree = {};
  if (!isTree(tree)) throw new TrainConfigError(`${source}: expected a YAML mapping at the top level`);
  for (const w of overrides) applyOverride(tree, parseOverride(w));
  mergeUnder(tree, defaultTree());
  resolveInterpolations(tree);
  const r = TrainConfigSchema.safeParse(tree);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}${describeReceived(tree as Tree, i.path)}`);
    throw new TrainConfigError(`${source}: ${r.error.issues.length} invalid value(s):\n${lines.join('\n')}`);
  }
  const unknown: string[] = [];
  unknownKeys(tree, r.data, '', unknown);
  return { config: r.data, unknownKeys: unknown.sort() };
}

function describeReceived(tree: Tree, path: readonly PropertyKey[]): string {
  let v: unknown = tree;
  for (const k of path) {
    if (!isTree(v)) return '';
    v = v[String(k)];
  }
  return v === undefined ? '' : ` (received ${JSON.stringify(v)})`;
}

/** Loads `file` (the official rar.yaml layout) and applies `overrides`. */
export function loadTrainConfig(file: string | null, overrides: readonly string[] = []): LoadedTrainConfig {
  const text = file === null ? '' : readFileSync(file, 'utf8');
  return buildTrainConfig(text, overrides, file ?? 'defaults');
}

/** Splits argv words into `config=FILE`, other `key=value` overrides, and the rest. */
export function splitConfigArgs(argv: readonly string[]): { configFile: string | null; overrides: string[]; rest: string[] } {
  let configFile: string | null = null;
  const overrides: string[] = [];
  const rest: string[] = [];
  for (const w of argv) {
    if (w.startsWith('config=')) configFile = w.slice('config='.length);
    else if (!w.startsWith('-') && /^[A-Za-z_][\w.\-]*=/.test(w)) overrides.push(w);
    else rest.push(w);
  }
  return { configFile, overrides, rest };
}

/** The generator fields of the official configs and config.json files (model.generator's names). */
export interface OfficialGeneratorFields {
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  image_seq_len: number;
  condition_num_classes: number;
}

/** The generator sizes under the official key names, with the tokenizer's codebook size (the released layout of the embedding tables). */
export function generatorConfigFromOfficial(g: OfficialGeneratorFields, codebookSize: number): GeneratorConfig {
  return GeneratorConfigSchema.parse({
    hiddenSize: g.hidden_size,
    depth: g.num_hidden_layers,
    numHeads: g.num_attention_heads,
    headDim: g.hidden_size / g.num_attention_heads,
    mlpDim: g.intermediate_size,
    seqLen: g.image_seq_len,
    codebookSize,
    numClasses: g.condition_num_classes,
    ...positionRows(g.image_seq_len),
  });
}

/** The generator sizes of a training config. */
export function generatorConfigOf(c: TrainConfig): GeneratorConfig {
  return generatorConfigFromOfficial(c.model.generator, c.model.vq_model.codebook_size);
}

/** The config as YAML (saved next to checkpoints so a run can be reproduced). */
export { stringify as toYaml } from 'yaml';
