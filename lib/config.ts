// Model configurations: the four released RAR presets, the MaskGIT-VQGAN tokenizer,
// and inference of every size from a checkpoint's tensor index alone (no data read).
// A checkpoint is the source of truth: presets only pick sampling defaults and are
// checked against the weights, never trusted over them. Validation lists every
// problem at once (wrong shapes, missing and unexpected keys) so that a user with a
// bad file learns everything from one error. The expected state dicts are not written
// here: they come from the parameter tables the C++ models are built from
// (src/model/rar_params.cc, vqgan_params.cc, through the addon; why that direction:
// src/model/rar_params.h).
import { z } from 'zod';
import { shapeToString, type TensorInfo } from './tensor.js';
import { native, type NativeRarConfig, type NativeSampling, type NativeVqConfig } from './native.js';

// ---------------------------------------------------------------------------------
// Schemas

const positiveInt = z.number().int().positive();

/** Generator sizes (MODEL.md names in comments). */
export const GeneratorConfigSchema = z
  .object({
    hiddenSize: positiveInt, // C
    depth: positiveInt, // number of transformer blocks
    numHeads: positiveInt, // H
    headDim: positiveInt, // D = C / H
    mlpDim: positiveInt, // I
    seqLen: positiveInt, // N image tokens
    codebookSize: positiveInt, // V
    numClasses: positiveInt, // K
    posEmbedRows: positiveInt, // rows of pos_embed and target_aware_pos_embed (N + POS_EMBED_EXTRA_ROWS)
    timestepRows: positiveInt, // rows of timesteps_embeddings (N + TIMESTEP_EXTRA_ROWS)
  })
  .refine((c) => c.numHeads * c.headDim === c.hiddenSize, {
    message: 'hiddenSize must equal numHeads * headDim',
  })
  .refine((c) => c.posEmbedRows >= c.seqLen + 2, { message: 'posEmbedRows must be at least seqLen + 2' })
  .refine((c) => c.timestepRows >= c.seqLen + 2, { message: 'timestepRows must be at least seqLen + 2' });
export type GeneratorConfig = z.infer<typeof GeneratorConfigSchema>;

/** Sampling defaults (MODEL.md table): CFG scale g, its power p, softmax temperature. */
export const SamplingDefaultsSchema = z.object({
  guidanceScale: z.number().finite().min(0),
  guidanceScalePow: z.number().finite().min(0),
  temperature: z.number().finite().positive(),
});
export type SamplingDefaults = z.infer<typeof SamplingDefaultsSchema>;

/** The sampling options left out: the model's defaults for guidance and temperature; top-k, top-p and greedy off. */
export function resolveSampling(o: Partial<NativeSampling>, d: SamplingDefaults): NativeSampling {
  return {
    guidanceScale: o.guidanceScale ?? d.guidanceScale,
    guidanceScalePow: o.guidanceScalePow ?? d.guidanceScalePow,
    temperature: o.temperature ?? d.temperature,
    topK: o.topK ?? 0,
    topP: o.topP ?? 1,
    greedy: o.greedy ?? false,
  };
}

/** MaskGIT-VQGAN sizes. */
export const TokenizerConfigSchema = z.object({
  hiddenChannels: positiveInt,
  channelMult: z.array(positiveInt).min(1),
  numResBlocks: positiveInt,
  zChannels: positiveInt,
  codebookSize: positiveInt,
  /** Pixels per side; the token grid is resolution / 2^(channelMult.length - 1). */
  resolution: positiveInt,
});
export type TokenizerConfig = z.infer<typeof TokenizerConfigSchema>;

export const PRESET_NAMES = ['rar-b', 'rar-l', 'rar-xl', 'rar-xxl'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];
export const PresetNameSchema = z.enum(PRESET_NAMES);

export interface Preset {
  name: PresetName;
  generator: GeneratorConfig;
  sampling: SamplingDefaults;
  /** Parameter count as the paper reports it. */
  params: string;
  /** FID-50k reported in the paper with these sampling defaults. */
  fid: number;
}

// ---------------------------------------------------------------------------------
// Presets (MODEL.md "Sizes")

/** Extra rows of the released position tables beyond N: N + 1024 and N + 100. */
export const POS_EMBED_EXTRA_ROWS = 1024;
export const TIMESTEP_EXTRA_ROWS = 100;

/** posEmbedRows and timestepRows as the official code sizes them for N image tokens. */
export function positionRows(seqLen: number): { posEmbedRows: number; timestepRows: number } {
  return { posEmbedRows: seqLen + POS_EMBED_EXTRA_ROWS, timestepRows: seqLen + TIMESTEP_EXTRA_ROWS };
}

const RELEASE_N = 256;
const RELEASE_V = 1024;
const RELEASE_K = 1000;

function releaseGenerator(hiddenSize: number, depth: number, numHeads: number, mlpDim: number): GeneratorConfig {
  return GeneratorConfigSchema.parse({
    hiddenSize,
    depth,
    numHeads,
    headDim: hiddenSize / numHeads,
    mlpDim,
    seqLen: RELEASE_N,
    codebookSize: RELEASE_V,
    numClasses: RELEASE_K,
    ...positionRows(RELEASE_N),
  });
}

export const PRESETS: Readonly<Record<PresetName, Preset>> = Object.freeze({
  'rar-b': {
    name: 'rar-b',
    generator: releaseGenerator(768, 24, 16, 3072),
    sampling: { guidanceScale: 16.0, guidanceScalePow: 2.75, temperature: 1.0 },
    params: '261M',
    fid: 1.95,
  },
  'rar-l': {
    name: 'rar-l',
    generator: releaseGenerator(1024, 24, 16, 4096),
    sampling: { guidanceScale: 15.5, guidanceScalePow: 2.5, temperature: 1.02 },
    params: '461M',
    fid: 1.7,
  },
  'rar-xl': {
    name: 'rar-xl',
    generator: releaseGenerator(1280, 32, 16, 5120),
    sampling: { guidanceScale: 6.9, guidanceScalePow: 1.5, temperature: 1.02 },
    params: '955M',
    fid: 1.5,
  },
  'rar-xxl': {
    name: 'rar-xxl',
    generator: releaseGenerator(1408, 40, 16, 6144),
    sampling: { guidanceScale: 8.0, guidanceScalePow: 1.2, temperature: 1.02 },
    params: '1.5B',
    fid: 1.48,
  },
});

/** Sampling defaults when the weights match no preset: no guidance, temperature 1. */
export const NEUTRAL_SAMPLING: Readonly<SamplingDefaults> = Object.freeze({
  guidanceScale: 0,
  guidanceScalePow: 0,
  temperature: 1,
});

/** The released MaskGIT-VQGAN (maskgit-vqgan-imagenet-f16-256.bin). */
export const MASKGIT_VQGAN: Readonly<TokenizerConfig> = Object.freeze({
  hiddenChannels: 128,
  channelMult: [1, 1, 2, 2, 4],
  numResBlocks: 2,
  zChannels: 256,
  codebookSize: 1024,
  resolution: 256,
});

/** Token grid side of a tokenizer (16 for the release: 256 px / 2^4). */
export function tokenGridSize(cfg: TokenizerConfig): number {
  return cfg.resolution / 2 ** (cfg.channelMult.length - 1);
}

export function toNativeRarConfig(c: GeneratorConfig): NativeRarConfig {
  return {
    hiddenSize: c.hiddenSize,
    depth: c.depth,
    numHeads: c.numHeads,
    mlpDim: c.mlpDim,
    seqLen: c.seqLen,
    codebookSize: c.codebookSize,
    numClasses: c.numClasses,
    posEmbedRows: c.posEmbedRows,
    timestepRows: c.timestepRows,
  };
}

export function toNativeVqConfig(c: TokenizerConfig): NativeVqConfig {
  return { ...c, channelMult: [...c.channelMult] };
}

/** One line describing a generator's sizes, for messages. */
export function describeGeneratorConfig(c: GeneratorConfig): string {
  return (
    `hidden ${c.hiddenSize}, depth ${c.depth}, heads ${c.numHeads}, head dim ${c.headDim}, MLP ${c.mlpDim}, ` +
    `tokens ${c.seqLen}, codebook ${c.codebookSize}, classes ${c.numClasses}`
  );
}

const GENERATOR_FIELDS = [
  'hiddenSize',
  'depth',
  'numHeads',
  'headDim',
  'mlpDim',
  'seqLen',
  'codebookSize',
  'numClasses',
  'posEmbedRows',
  'timestepRows',
] as const satisfies readonly (keyof GeneratorConfig)[];

export function sameGeneratorConfig(a: GeneratorConfig, b: GeneratorConfig): boolean {
  return GENERATOR_FIELDS.every((f) => a[f] === b[f]);
}

/** The preset whose sizes equal these, if any. */
export function matchPreset(c: GeneratorConfig): Preset | undefined {
  return Object.values(PRESETS).find((p) => sameGeneratorConfig(p.generator, c));
}

/**
 * The preset to use for weights whose config was inferred: when `name` is given it
 * must match the weights exactly (else an error naming both); otherwise the matching
 * preset, if any.
 */
export function resolvePreset(name: PresetName | undefined, inferred: GeneratorConfig, source = 'the weights'): Preset | undefined {
  if (name === undefined) return matchPreset(inferred);
  const preset = PRESETS[name];
  if (!sameGeneratorConfig(preset.generator, inferred)) {
    const diffs = GENERATOR_FIELDS.filter((f) => preset.generator[f] !== inferred[f]).map(
      (f) => `${f} ${preset.generator[f]} vs ${inferred[f]}`,
    );
    const actual = matchPreset(inferred);
    throw new WeightsMismatchError(
      source,
      [],
      [],
      [],
      [],
      `preset ${name} (${describeGeneratorConfig(preset.generator)}) does not match ${source} ` +
        `(${describeGeneratorConfig(inferred)}${actual ? `; they are ${actual.name}` : ''}): ${diffs.join(', ')}`,
    );
  }
  return preset;
}

// ---------------------------------------------------------------------------------
// Errors

/** A checkpoint whose tensors do not fit the expected model. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly code: string = 'RARGEN_CONFIG';
}

/** Every difference between a checkpoint and the expected state dict. */
export class WeightsMismatchError extends ConfigError {
  override name = 'WeightsMismatchError';
  override readonly code: string = 'RARGEN_WEIGHTS_MISMATCH';
  constructor(
    readonly model: string,
    readonly wrongShapes: { key: string; expected: number[]; found: number[] }[],
    readonly missing: string[],
    readonly unexpected: string[],
    readonly wrongDtypes: { key: string; dtype: string }[] = [],
    /** The message when it is not the tensor list (a preset that does not match the weights). */
    message?: string,
  ) {
    super(message ?? WeightsMismatchError.format(model, wrongShapes, missing, unexpected, wrongDtypes));
  }

  static format(
    model: string,
    wrongShapes: { key: string; expected: number[]; found: number[] }[],
    missing: string[],
    unexpected: string[],
    wrongDtypes: { key: string; dtype: string }[],
  ): string {
    const lines: string[] = [];
    const n = wrongShapes.length + missing.length + unexpected.length + wrongDtypes.length;
    lines.push(`${model} weights do not match the expected state dict (${n} problem${n === 1 ? '' : 's'}):`);
    for (const w of wrongShapes) lines.push(`  ${w.key}: expected ${shapeToString(w.expected)} but found ${shapeToString(w.found)}`);
    for (const w of wrongDtypes) lines.push(`  ${w.key}: expected a floating-point tensor but found ${w.dtype}`);
    if (missing.length) lines.push(`  missing keys (${missing.length}): ${listKeys(missing)}`);
    if (unexpected.length) lines.push(`  unexpected keys (${unexpected.length}): ${listKeys(unexpected)}`);
    return lines.join('\n');
  }
}

function listKeys(keys: string[], max = 20): string {
  return keys.length <= max ? keys.join(', ') : keys.slice(0, max).join(', ') + `, ... (${keys.length - max} more)`;
}

// ---------------------------------------------------------------------------------
// Expected state dicts

/** One tensor of a model's parameter table (src/model/params.h ParamSpec). */
export interface ParamSpec {
  name: string;
  shape: number[];
  /** 'linear' / 'conv' (GEMM and convolution weights: stored in the weight dtype), 'bias', 'norm_weight', 'norm_bias', 'norm_stat' (BatchNorm running mean/var), 'embedding' (tables, tokens, codebook). */
  kind: 'linear' | 'conv' | 'bias' | 'norm_weight' | 'norm_bias' | 'norm_stat' | 'embedding';
  /** The official initialisation: trunc normal(0, 0.02), zeros or ones. */
  init: 'trunc_normal' | 'zeros' | 'ones';
  /** Whether AdamW decays it (1d-tokenizer's two parameter groups). */
  decayed: boolean;
  /** The block index of a per-block tensor (RAR's transformer blocks), else -1. */
  block: number;
}

/**
 * The generator's parameter table, in state-dict order: the one description of the
 * RAR state dict (src/model/rar_params.cc, through the addon), from which the model,
 * the trainer, AdamW's groups, these expected keys and shapes, the initialisation
 * (lib/train/init.ts) and the test weights (lib/testing/weights.ts) are derived.
 */
export function generatorParamTable(c: NativeRarConfig): ParamSpec[] {
  return tableOf('RAR generator', () => addonTables().rarParamTable(c));
}

/**
 * The FID InceptionV3's parameter table in state-dict order (src/model/inception_params.cc,
 * through the addon): every tensor of pt_inception-2015-12-05-6726825d.pth, from which
 * lib/inception.ts checks checkpoints and the tests and bench/fid.ts write formula weights.
 */
export function inceptionParamTable(): ParamSpec[] {
  return addonTables().inceptionParamTable();
}

/** The addon's table exports (src/binding.cc). */
interface NativeParamTables {
  rarParamTable(c: NativeRarConfig): ParamSpec[];
  vqParamTable(c: NativeVqConfig): ParamSpec[];
  inceptionParamTable(): ParamSpec[];
}
function addonTables(): NativeParamTables {
  return native() as ReturnType<typeof native> & NativeParamTables;
}
/** Sizes the addon refuses (out of its ranges) become a ConfigError naming the model. */
function tableOf(model: string, f: () => ParamSpec[]): ParamSpec[] {
  try {
    return f();
  } catch (e) {
    if (e instanceof RangeError || e instanceof TypeError) throw new ConfigError(`${model}: ${e.message.replace(/^rargen(\.\w+)?: /, '')}`);
    throw e;
  }
}

/** Every generator tensor name with its shape, in state-dict order (from generatorParamTable). */
export function expectedGeneratorTensors(c: GeneratorConfig): Map<string, number[]> {
  return new Map(generatorParamTable(toNativeRarConfig(c)).map((p) => [p.name, p.shape]));
}

/**
 * The tokenizer's parameter table (encoder, decoder, codebook) in state-dict order
 * (src/model/vqgan_params.cc, through the addon). The res blocks per level and in each
 * middle are `numResBlocks` (maskgit_vqgan.py builds both with it).
 */
export function tokenizerParamTable(c: NativeVqConfig): ParamSpec[] {
  return tableOf('MaskGIT-VQGAN tokenizer', () => addonTables().vqParamTable(c));
}

/** Every MaskGIT-VQGAN tensor name with its shape (encoder, decoder, codebook). */
export function expectedTokenizerTensors(c: TokenizerConfig): Map<string, number[]> {
  return new Map(tokenizerParamTable(toNativeVqConfig(c)).map((p) => [p.name, p.shape]));
}

const FLOAT_DTYPES = new Set(['float32', 'float16', 'bfloat16']);

function compareTensors(model: string, tensors: ReadonlyMap<string, TensorInfo>, expected: Map<string, number[]>): void {
  const wrongShapes: { key: string; expected: number[]; found: number[] }[] = [];
  const wrongDtypes: { key: string; dtype: string }[] = [];
  const missing: string[] = [];
  for (const [key, shape] of expected) {
    const t = tensors.get(key);
    if (!t) missing.push(key);
    else {
      if (!sameShape(t.shape, shape)) wrongShapes.push({ key, expected: shape, found: [...t.shape] });
      if (!FLOAT_DTYPES.has(t.dtype)) wrongDtypes.push({ key, dtype: t.dtype });
    }
  }
  const unexpected = [...tensors.keys()].filter((k) => !expected.has(k));
  if (wrongShapes.length || missing.length || unexpected.length || wrongDtypes.length) {
    throw new WeightsMismatchError(model, wrongShapes, missing, unexpected, wrongDtypes);
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Throws a WeightsMismatchError listing every wrong shape, missing and unexpected key. */
export function validateGeneratorWeights(tensors: ReadonlyMap<string, TensorInfo>, config: GeneratorConfig): void {
  compareTensors('RAR generator', tensors, expectedGeneratorTensors(GeneratorConfigSchema.parse(config)));
}

/** Every FID InceptionV3 tensor name with its shape, in state-dict order (from inceptionParamTable). */
export function expectedInceptionTensors(): Map<string, number[]> {
  return new Map(inceptionParamTable().map((p) => [p.name, p.shape]));
}

/**
 * Throws a WeightsMismatchError listing every wrong shape or dtype, missing and unexpected
 * key of the FID InceptionV3 state dict. The `<conv>.bn.num_batches_tracked` counters of
 * its BatchNorms (saved by PyTorch >= 0.4.1; not parameters) are allowed and not checked.
 */
export function validateInceptionWeights(tensors: ReadonlyMap<string, TensorInfo>): void {
  const expected = expectedInceptionTensors();
  const counters = new Set([...expected.keys()].filter((k) => k.endsWith('.bn.running_var')).map((k) => k.replace(/running_var$/, 'num_batches_tracked')));
  compareTensors('FID InceptionV3', new Map([...tensors].filter(([k]) => !counters.has(k))), expected);
}

/** Throws a WeightsMismatchError listing every wrong shape, missing and unexpected key. */
export function validateTokenizerWeights(tensors: ReadonlyMap<string, TensorInfo>, config: TokenizerConfig): void {
  compareTensors('MaskGIT-VQGAN tokenizer', tensors, expectedTokenizerTensors(TokenizerConfigSchema.parse(config)));
}

// ---------------------------------------------------------------------------------
// Inference from weights

export type ModelKind = 'rar-generator' | 'maskgit-vqgan' | 'unknown';

/** What a checkpoint holds, judged from its key names. */
export function detectModelKind(tensors: ReadonlyMap<string, TensorInfo>): ModelKind {
  const top = generatorLayout().topLevel;
  if (top.filter((k) => tensors.has(k)).length * 2 > top.length) return 'rar-generator';
  if (tensors.has('quantize.embedding.weight') && (tensors.has('decoder.conv_in.weight') || tensors.has('encoder.conv_in.weight')))
    return 'maskgit-vqgan';
  return 'unknown';
}

function need(model: string, tensors: ReadonlyMap<string, TensorInfo>, key: string, rank: number): number[] {
  const t = tensors.get(key);
  if (!t) throw new ConfigError(`cannot infer the ${model} config: tensor ${key} is missing`);
  if (t.shape.length !== rank)
    throw new ConfigError(`cannot infer the ${model} config: ${key} should have ${rank} dimensions but has shape ${shapeToString(t.shape)}`);
  return t.shape;
}

function maxIndex(tensors: ReadonlyMap<string, TensorInfo>, re: RegExp): number {
  let max = -1;
  for (const k of tensors.keys()) {
    const m = re.exec(k);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max;
}

/** Where a checkpoint carries one size: tensor `key`, dimension `axis` of `rank`. */
interface SizeAt {
  key: string;
  axis: number;
  rank: number;
}

/**
 * Where each generator size sits in a checkpoint, derived from the parameter table
 * (no key written here): the table is computed for a probe config whose sizes are
 * pairwise distinct and unlike every size derived from them (3C, 6C, V + K + 2, ...), so
 * the first tensor dimension equal to a probe size is the one that carries it. The
 * embedding table's rows are V + K + an offset that a second probe (K + 1) measures.
 */
export interface GeneratorLayout {
  hidden: SizeAt;
  headDim: SizeAt;
  mlp: SizeAt;
  codebook: SizeAt;
  posRows: SizeAt;
  tsRows: SizeAt;
  embeddingRows: SizeAt;
  /** embedding rows = codebook + classes + this. */
  embeddingExtra: number;
  /** The non-block tensors (what identifies a RAR generator). */
  topLevel: string[];
  /** What every per-block key starts with before its block index ("blocks."). */
  blockPrefix: string;
  /** Matches a per-block key; group 1 is the block index. */
  blockKey: RegExp;
}

let layoutCache: GeneratorLayout | undefined;

export function generatorLayout(): GeneratorLayout {
  if (layoutCache) return layoutCache;
  const probe: NativeRarConfig = {
    hiddenSize: 143, // = 11 heads x head dim 13
    depth: 1,
    numHeads: 11,
    mlpDim: 1009,
    seqLen: 17,
    codebookSize: 2003,
    numClasses: 3001,
    posEmbedRows: 4001,
    timestepRows: 4999,
  };
  const table = generatorParamTable(probe);
  const at = (value: number, what: string): SizeAt => {
    for (const p of table) {
      const axis = p.shape.indexOf(value);
      if (axis >= 0) return { key: p.name, axis, rank: p.shape.length };
    }
    throw new Error(`internal: no generator tensor carries the ${what} (the parameter table changed?)`);
  };
  const plusOne = generatorParamTable({ ...probe, numClasses: probe.numClasses + 1 });
  let embeddingRows: SizeAt | undefined;
  let extra = 0;
  for (let i = 0; i < table.length && !embeddingRows; i++) {
    const a = table[i]!.shape, b = plusOne[i]!.shape;
    const axis = a.findIndex((d, k) => b[k] === d + 1);
    if (axis >= 0) {
      embeddingRows = { key: table[i]!.name, axis, rank: a.length };
      extra = a[axis]! - probe.codebookSize - probe.numClasses;
    }
  }
  if (!embeddingRows) throw new Error('internal: no generator tensor carries the class count (the parameter table changed?)');
  const blockNames = table.filter((p) => p.block === 0).map((p) => p.name);
  let prefix = blockNames[0] ?? '';
  for (const n of blockNames) while (!n.startsWith(prefix)) prefix = prefix.slice(0, -1);
  const m = /^(.*?)0\.$/.exec(prefix); // "blocks.0." -> "blocks."
  if (!m) throw new Error(`internal: the generator's block tensors share no "<name>.0." prefix (${prefix})`);
  layoutCache = {
    hidden: at(probe.hiddenSize, 'hidden size'),
    headDim: at(probe.hiddenSize / probe.numHeads, 'head dim'),
    mlp: at(probe.mlpDim, 'MLP size'),
    codebook: at(probe.codebookSize, 'codebook size'),
    posRows: at(probe.posEmbedRows, 'position rows'),
    tsRows: at(probe.timestepRows, 'timestep rows'),
    embeddingRows,
    embeddingExtra: extra,
    topLevel: table.filter((p) => p.block < 0).map((p) => p.name),
    blockPrefix: m[1]!,
    blockKey: new RegExp(`^${m[1]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\d+)\\.`),
  };
  return layoutCache;
}

/** The generator's keys as a reader would look for them: "cls_token, pos_embed, ..., blocks.*". */
export function generatorKeysHint(): string {
  const L = generatorLayout();
  return [...L.topLevel, `${L.blockPrefix}*`].join(', ');
}

/**
 * Every generator size from the tensor index, at the places generatorLayout() derives
 * from the parameter table: C, head dim D (H = C / D), MLP I, codebook V, the position
 * and timestep rows (N = timestep rows - 100), K from the embedding rows, depth from
 * the largest block index. Checks the result is self-consistent, not that every tensor
 * fits (validateGeneratorWeights does that).
 */
export function inferGeneratorConfig(tensors: ReadonlyMap<string, TensorInfo>): GeneratorConfig {
  const M = 'RAR generator';
  const L = generatorLayout();
  const size = (s: SizeAt) => need(M, tensors, s.key, s.rank)[s.axis]!;
  const C = size(L.hidden);
  const depth = maxIndex(tensors, L.blockKey) + 1;
  if (depth === 0) throw new ConfigError(`cannot infer the ${M} config: no ${L.blockPrefix}<i>.* tensors`);
  const D = size(L.headDim);
  if (C % D !== 0) throw new ConfigError(`cannot infer the ${M} config: hidden size ${C} (${L.hidden.key}) is not a multiple of head dim ${D} (${L.headDim.key})`);
  const I = size(L.mlp);
  const timestepRows = size(L.tsRows);
  const posEmbedRows = size(L.posRows);
  const N = timestepRows - TIMESTEP_EXTRA_ROWS;
  if (N < 1) throw new ConfigError(`cannot infer the ${M} config: ${L.tsRows.key} has ${timestepRows} rows, expected N + ${TIMESTEP_EXTRA_ROWS}`);
  const V = size(L.codebook);
  const E = size(L.embeddingRows);
  const K = E - V - L.embeddingExtra;
  if (K < 1) throw new ConfigError(`cannot infer the ${M} config: ${L.embeddingRows.key} has ${E} rows, expected V + K + ${L.embeddingExtra} with V = ${V}`);
  const parsed = GeneratorConfigSchema.safeParse({
    hiddenSize: C,
    depth,
    numHeads: C / D,
    headDim: D,
    mlpDim: I,
    seqLen: N,
    codebookSize: V,
    numClasses: K,
    posEmbedRows,
    timestepRows,
  });
  if (!parsed.success) throw new ConfigError(`cannot infer the ${M} config: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  return parsed.data;
}

/**
 * Every tokenizer size from the tensor index: hidden channels from encoder.conv_in
 * (else the gcd of the decoder's level widths), channel_mult from each level's first
 * conv, res blocks per level from the block indices (the middles have as many:
 * maskgit_vqgan.py builds both with `num_res_blocks`), z from the codebook width.
 * Resolution cannot be seen in the weights: it is taken as `gridSize` tokens per side
 * (16, as RAR uses) times the downsampling factor, unless given.
 */
export function inferTokenizerConfig(
  tensors: ReadonlyMap<string, TensorInfo>,
  opts: { resolution?: number; gridSize?: number } = {},
): TokenizerConfig {
  const M = 'MaskGIT-VQGAN';
  const [codebookSize, zChannels] = need(M, tensors, 'quantize.embedding.weight', 2) as [number, number];
  const hasEncoder = tensors.has('encoder.conv_in.weight');
  const side = hasEncoder ? 'encoder' : 'decoder';
  const levelKey = hasEncoder ? 'down' : 'up';
  const levels = maxIndex(tensors, new RegExp(`^${side}\\.${levelKey}\\.(\\d+)\\.`)) + 1;
  if (levels === 0) throw new ConfigError(`cannot infer the ${M} config: no ${side}.${levelKey}.<i>.* tensors`);
  const numResBlocks = maxIndex(tensors, new RegExp(`^${side}\\.${levelKey}\\.0\\.block\\.(\\d+)\\.`)) + 1;
  if (numResBlocks === 0) throw new ConfigError(`cannot infer the ${M} config: no ${side}.${levelKey}.0.block.<j>.* tensors`);
  for (const part of ['encoder', 'decoder']) {
    const mid = maxIndex(tensors, new RegExp(`^${part}\\.mid\\.(\\d+)\\.`)) + 1;
    if (mid > 0 && mid !== numResBlocks)
      throw new ConfigError(
        `cannot infer the ${M} config: ${part}.mid has ${mid} res blocks but ${side}.${levelKey}.0 has ${numResBlocks}; ` +
          `maskgit_vqgan.py builds both with num_res_blocks, so this is not a MaskGIT-VQGAN state dict`,
      );
  }
  const widths: number[] = [];
  for (let i = 0; i < levels; i++) widths.push(need(M, tensors, `${side}.${levelKey}.${i}.block.0.conv1.weight`, 4)[0]!);
  const hiddenChannels = hasEncoder ? need(M, tensors, 'encoder.conv_in.weight', 4)[0]! : widths.reduce(gcd);
  const channelMult = widths.map((w) => w / hiddenChannels);
  if (!channelMult.every((x) => Number.isInteger(x)))
    throw new ConfigError(`cannot infer the ${M} config: level widths ${widths.join(', ')} are not multiples of ${hiddenChannels} (encoder.conv_in)`);
  const grid = opts.gridSize ?? 16;
  const resolution = opts.resolution ?? grid * 2 ** (levels - 1);
  const parsed = TokenizerConfigSchema.safeParse({ hiddenChannels, channelMult, numResBlocks, zChannels, codebookSize, resolution });
  if (!parsed.success) throw new ConfigError(`cannot infer the ${M} config: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  return parsed.data;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}
