// The public model API: load a RAR generator and a MaskGIT-VQGAN tokenizer from their
// checkpoints, sample class-conditional tokens, decode them to images, encode images
// to tokens. Everything a caller passes is validated here (zod) with messages that
// name the option, what was expected and what was received, before anything crosses
// into the native addon. Weights are streamed into the native model one tensor at a
// time, so peak host memory stays about one tensor above the model itself.
import { z } from 'zod';
import { openCheckpoint } from './io/index.js';
import type { Checkpoint } from './tensor.js';
import { native, type NativeModel } from './native.js';
import {
  detectModelKind,
  generatorKeysHint,
  inferGeneratorConfig,
  inferTokenizerConfig,
  NEUTRAL_SAMPLING,
  PRESET_NAMES,
  resolvePreset,
  toNativeRarConfig,
  toNativeVqConfig,
  tokenGridSize,
  validateGeneratorWeights,
  validateTokenizerWeights,
  ConfigError,
  type GeneratorConfig,
  type Preset,
  type PresetName,
  resolveSampling,
  type SamplingDefaults,
  type TokenizerConfig,
} from './config.js';
import { resolveDevice, type DeviceSpec, type ResolvedDevice } from './device.js';
import { decoderOutputToImages, imagesToPixels, type RgbImage } from './image.js';
import { resolveModelPath } from './releases.js';
import { IMAGENET_CLASSES, resolveClassName } from './classes.js';
import { demoPaths, loadDemoInfo } from './demo/index.js';
import { resolve as resolvePath } from 'node:path';

import { ClassNameError } from './errors.js';
import {
  arrayLike,
  boolSchema,
  cancellable,
  describeValue,
  deviceSchema,
  finiteAtLeast0,
  fnSchema,
  intAtLeast,
  intBetween,
  parseOptions,
  pathSchema as pathString,
  positiveNumber,
  PrecisionSchema,
  seedSchema,
  signalSchema,
  unitInterval,
  ValidationError,
  type Precision,
} from './validate.js';
// Re-exported: they were defined here before lib/validate.ts, and callers import them from here.
export { describeValue, parseOptions, PrecisionSchema, ValidationError, type Precision };

const pathSchema = pathString();
const presetSchema = z.enum(PRESET_NAMES, { error: `one of ${PRESET_NAMES.join(', ')}` });

// ---------------------------------------------------------------------------------
// Models

abstract class NativeModelHolder {
  #handle: NativeModel | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #busy = 0;
  #disposeRequested = false;

  constructor(handle: NativeModel) {
    this.#handle = handle;
  }

  /** True once dispose() was called. */
  get disposed(): boolean {
    return this.#disposeRequested;
  }

  /** @internal The native handle; throws when disposed. */
  handle(what: string): NativeModel {
    if (this.#disposeRequested || !this.#handle) throw new ValidationError(`${what}: the ${this.kindName} was disposed`);
    return this.#handle;
  }

  protected abstract get kindName(): string;

  /** @internal Runs native jobs on this model one at a time. */
  exclusive<T>(fn: (h: NativeModel) => Promise<T>, what: string): Promise<T> {
    const h = this.handle(what);
    this.#busy++;
    const run = this.#queue.then(() => {
      if (!this.#handle) throw new ValidationError(`${what}: the ${this.kindName} was disposed`);
      return fn(h);
    });
    this.#queue = run.catch(() => undefined).finally(() => {
      this.#busy--;
      if (this.#busy === 0 && this.#disposeRequested) this.#free();
    });
    return run;
  }

  /** Frees the native model (after any running job). Idempotent. */
  dispose(): void {
    this.#disposeRequested = true;
    if (this.#busy === 0) this.#free();
  }

  #free(): void {
    if (this.#handle) {
      const h = this.#handle;
      this.#handle = undefined;
      native().free(h);
    }
  }
}

/** A loaded RAR generator. Create with loadGenerator(); free with dispose(). */
export class Generator extends NativeModelHolder {
  protected get kindName(): string {
    return 'generator';
  }
  /** @internal */
  constructor(
    handle: NativeModel,
    /** The checkpoint it was loaded from. */
    readonly path: string,
    /** Sizes inferred from (and checked against) the weights. */
    readonly config: GeneratorConfig,
    /** The release preset these weights are, if any. */
    readonly preset: Preset | undefined,
    /** Defaults for guidanceScale, guidanceScalePow and temperature. */
    readonly sampling: SamplingDefaults,
    readonly device: ResolvedDevice,
    readonly precision: Precision,
    /** The class names, one entry per class id (comma-separated synonyms), when known: the 1000 ImageNet classes for a 1000-class generator, the demo's own. */
    readonly classNames?: readonly string[],
  ) {
    super(handle);
  }

  readonly #dependents = new Set<{ dispose(reason?: string): void }>();
  /** @internal A DecodeSession on this generator: disposed with it (its KV memory freed then, not leaked). */
  attach(dependent: { dispose(reason?: string): void }): () => void {
    this.#dependents.add(dependent);
    return () => this.#dependents.delete(dependent);
  }

  /** Frees the native model (after any running job) and disposes the DecodeSessions on it. Idempotent. */
  override dispose(): void {
    for (const d of [...this.#dependents]) d.dispose('its generator was disposed');
    this.#dependents.clear();
    super.dispose();
  }
}

/** A loaded MaskGIT-VQGAN tokenizer. Create with loadTokenizer(); free with dispose(). */
export class Tokenizer extends NativeModelHolder {
  protected get kindName(): string {
    return 'tokenizer';
  }
  /** @internal */
  constructor(
    handle: NativeModel,
    readonly path: string,
    readonly config: TokenizerConfig,
    readonly device: ResolvedDevice,
  ) {
    super(handle);
  }
  /** Image side in pixels (256 for the release). */
  get resolution(): number {
    return this.config.resolution;
  }
  /** Token grid side (16 for the release). */
  get gridSize(): number {
    return tokenGridSize(this.config);
  }
  /** Tokens per image (256 for the release). */
  get numTokens(): number {
    return this.gridSize ** 2;
  }
}

/** A Generator argument (`a Generator from loadGenerator()`). */
export const generatorSchema = z.custom<Generator>((v) => v instanceof Generator, { error: 'a Generator from loadGenerator()' });
/** A Tokenizer argument (`a Tokenizer from loadTokenizer()`). */
export const tokenizerSchema = z.custom<Tokenizer>((v) => v instanceof Tokenizer, { error: 'a Tokenizer from loadTokenizer()' });

export interface LoadProgress {
  /** Tensors copied so far. */
  tensorsDone: number;
  tensorsTotal: number;
  /** The tensor just copied. */
  name: string;
}

export interface LoadGeneratorOptions {
  /** Release preset; must match the weights. Without it the config is inferred and the defaults are the matching preset's, if any. */
  preset?: PresetName;
  /** 'auto' (default): CUDA when usable, else CPU. */
  device?: DeviceSpec;
  /** Storage of the weight matrices on the backend: 'f32' (default, exact), 'f16', 'bf16'. */
  precision?: Precision;
  /** Called after each tensor is copied. */
  onProgress?: (p: LoadProgress) => void;
}

export interface LoadTokenizerOptions {
  device?: DeviceSpec;
  /** Image side in pixels; inferred as 16 tokens per side times the downsampling factor if omitted (256 for the release). */
  resolution?: number;
  onProgress?: (p: LoadProgress) => void;
}

const LoadGeneratorOptionsSchema = z.strictObject(
  {
    preset: presetSchema.optional(),
    device: deviceSchema.optional(),
    precision: PrecisionSchema.optional(),
    onProgress: fnSchema<(p: LoadProgress) => void>().optional(),
  },
  { error: 'an options object' },
);

const LoadTokenizerOptionsSchema = z.strictObject(
  {
    device: deviceSchema.optional(),
    resolution: intAtLeast(1).optional(),
    onProgress: fnSchema<(p: LoadProgress) => void>().optional(),
  },
  { error: 'an options object' },
);

async function streamWeights(ckpt: Checkpoint, handle: NativeModel, onProgress?: (p: LoadProgress) => void): Promise<void> {
  const addon = native();
  const total = ckpt.tensors.size;
  let done = 0;
  for (const [name, info] of ckpt.tensors) {
    const data = await ckpt.readFloat32(name); // one tensor in memory at a time
    addon.setWeight(handle, name, data, [...info.shape]);
    done++;
    onProgress?.({ tensorsDone: done, tensorsTotal: total, name });
  }
  addon.finalize(handle);
}

function wrongKind(path: string, found: string, wanted: string, hint: string): ConfigError {
  return new ConfigError(`${path} holds ${found}, not ${wanted}${hint}`);
}

/**
 * Loads a RAR generator checkpoint (torch zip, torch legacy or safetensors): infers
 * the sizes from the weights, checks every tensor's shape (and the preset, if given),
 * creates the native model on the device and streams the weights into it.
 */
export async function loadGenerator(path: string, options: LoadGeneratorOptions = {}): Promise<Generator> {
  const given = parseOptions(pathSchema, path, 'loadGenerator', 'path');
  // 'demo' is the shipped demo model; a released name ('rar-b') is its file in the cache folder.
  const p = given === 'demo' ? demoPaths().weights : resolveModelPath(given);
  const demo = resolvePath(p) === resolvePath(demoPaths().weights) ? loadDemoInfo() : undefined;
  const o = parseOptions(LoadGeneratorOptionsSchema, options, 'loadGenerator');
  const device = resolveDevice(o.device ?? 'auto');
  const precision = o.precision ?? 'f32';
  const ckpt = await openCheckpoint(p);
  try {
    const kind = detectModelKind(ckpt.tensors);
    if (kind === 'maskgit-vqgan') throw wrongKind(p, 'a MaskGIT-VQGAN tokenizer', 'a RAR generator', ' (pass it as the tokenizer)');
    if (kind !== 'rar-generator') throw wrongKind(p, `${ckpt.tensors.size} tensors of an unknown model`, 'a RAR generator', ` (expected ${generatorKeysHint()})`);
    const config = inferGeneratorConfig(ckpt.tensors);
    const preset = resolvePreset(o.preset, config, p);
    validateGeneratorWeights(ckpt.tensors, config);
    const addon = native();
    const handle = addon.createRar(toNativeRarConfig(config), device.device, precision);
    try {
      await streamWeights(ckpt, handle, o.onProgress);
    } catch (e) {
      addon.free(handle);
      throw e;
    }
    const sampling = { ...(demo?.sampling ?? preset?.sampling ?? NEUTRAL_SAMPLING) };
    const classNames = demo ? Object.freeze([...demo.classes]) : config.numClasses === IMAGENET_CLASSES.length ? IMAGENET_CLASSES : undefined;
    return new Generator(handle, p, config, preset, sampling, device, precision, classNames);
  } finally {
    await ckpt.close();
  }
}

/** Loads a MaskGIT-VQGAN tokenizer checkpoint (encoder, decoder and codebook). */
export async function loadTokenizer(path: string, options: LoadTokenizerOptions = {}): Promise<Tokenizer> {
  const p = resolveModelPath(parseOptions(pathSchema, path, 'loadTokenizer', 'path'));
  const o = parseOptions(LoadTokenizerOptionsSchema, options, 'loadTokenizer');
  const device = resolveDevice(o.device ?? 'auto');
  const ckpt = await openCheckpoint(p);
  try {
    const kind = detectModelKind(ckpt.tensors);
    if (kind === 'rar-generator') throw wrongKind(p, 'a RAR generator', 'a MaskGIT-VQGAN tokenizer', ' (pass it as the generator)');
    if (kind !== 'maskgit-vqgan') throw wrongKind(p, `${ckpt.tensors.size} tensors of an unknown model`, 'a MaskGIT-VQGAN tokenizer', ' (expected encoder.*, decoder.*, quantize.embedding.weight)');
    const config = inferTokenizerConfig(ckpt.tensors, { resolution: o.resolution });
    if (config.resolution % 2 ** (config.channelMult.length - 1) !== 0)
      throw new ConfigError(`resolution ${config.resolution} is not a multiple of the tokenizer's downsampling factor ${2 ** (config.channelMult.length - 1)}`);
    validateTokenizerWeights(ckpt.tensors, config);
    const addon = native();
    const handle = addon.createVq(toNativeVqConfig(config), device.device);
    try {
      await streamWeights(ckpt, handle, o.onProgress);
    } catch (e) {
      addon.free(handle);
      throw e;
    }
    return new Tokenizer(handle, p, config, device);
  } finally {
    await ckpt.close();
  }
}

// ---------------------------------------------------------------------------------
// Generation

export interface GenerateProgress {
  /** Images whose tokens are all sampled. */
  imagesDone: number;
  imagesTotal: number;
  /** Fraction of the sampling work done, 0..1 (sampling steps over all batches). */
  fraction: number;
}

export interface GenerateOptions {
  generator: Generator;
  /** With a tokenizer, images are decoded too. Its token count must equal the generator's. */
  tokenizer?: Tokenizer;
  /** One class id (0..K-1) per image. */
  /** Class ids, or names when the generator has classNames ('golden retriever', 'tabby'; the demo's 'circle'). */
  classLabels: readonly (number | string)[] | Int32Array;
  /** Classifier-free guidance scale g (0 = none). Default: the preset's. */
  guidanceScale?: number;
  /** Power p of the guidance schedule. Default: the preset's. */
  guidanceScalePow?: number;
  /** Softmax temperature (> 0). Default: the preset's. */
  temperature?: number;
  /** Image i's randomness depends only on (seed, i, step), not on batchSize. Default 0. */
  seed?: number | bigint;
  /** Keep only the k most likely tokens (0 = off, the default). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 = off, the default). */
  topP?: number;
  /** Argmax instead of sampling. */
  greedy?: boolean;
  /** Images per native call (default 32; CFG runs 2x this many rows). */
  batchSize?: number;
  /**
   * Global index of this call's first image (default 0): image i is sampled as image
   * indexOffset + i of the seed, so a long run can be generated in pieces.
   */
  indexOffset?: number;
  onProgress?: (p: GenerateProgress) => void;
  /** Aborting cancels the running batch; the promise rejects with an AbortError. */
  signal?: AbortSignal;
}

export interface GenerateResult {
  classLabels: number[];
  /** N tokens per image, in classLabels order. */
  tokens: Int32Array[];
  /** RGB images (HWC uint8), when a tokenizer was given. */
  images?: RgbImage[];
}

/** The sampling options of generate() and sampleImageNet() (lib/sample), each optional. */
export const samplingFields = {
  guidanceScale: finiteAtLeast0.optional(),
  guidanceScalePow: finiteAtLeast0.optional(),
  temperature: positiveNumber.optional(),
  seed: seedSchema.optional(),
  topK: intAtLeast(0).optional(),
  topP: unitInterval.optional(),
};

/** Checks that both models are live and that the tokenizer decodes what the generator samples. */
export function checkPair(gen: Generator, tok: Tokenizer, what: string): void {
  gen.handle(what);
  tok.handle(what);
  if (tok.numTokens !== gen.config.seqLen)
    throw new ValidationError(`the tokenizer decodes ${tok.numTokens} tokens per image but the generator samples ${gen.config.seqLen}`);
  if (tok.config.codebookSize !== gen.config.codebookSize)
    throw new ValidationError(`the tokenizer's codebook has ${tok.config.codebookSize} entries but the generator's has ${gen.config.codebookSize}`);
}

/** options with class names in classLabels replaced by their ids (the generator's classNames). */
function withClassIds(options: GenerateOptions, gen: Generator): GenerateOptions {
  const labels = (options as { classLabels?: unknown }).classLabels;
  // without names, strings are left for the schema to report as non-integers
  if (!Array.isArray(labels) || !gen.classNames || !labels.some((l) => typeof l === 'string')) return options;
  const ids = labels.map((l: unknown, i) => {
    if (typeof l !== 'string') return l as number;
    try {
      return resolveClassName(l, gen.classNames!);
    } catch (e) {
      if (e instanceof ClassNameError) throw new ClassNameError(`classLabels[${i}]: ${e.message}`, e.query, e.candidates);
      throw e;
    }
  });
  return { ...options, classLabels: ids };
}

/**
 * Samples tokens for each class label (raster order, KV cache, classifier-free
 * guidance) and, with a tokenizer, decodes them to 8-bit RGB images.
 */
export async function generate(options: GenerateOptions): Promise<GenerateResult> {
  const base = parseOptions(
    z.looseObject(
      {
        generator: generatorSchema,
        tokenizer: tokenizerSchema.optional(),
      },
      { error: 'an options object' },
    ),
    options,
    'generate',
  );
  const gen = base.generator;
  const cfg = gen.config;
  const schema = z.strictObject(
    {
    generator: z.unknown().optional(),
    tokenizer: z.unknown().optional(),
    classLabels: arrayLike(intBetween(0, cfg.numClasses - 1), 'a non-empty array of class ids'),
    ...samplingFields,
    greedy: boolSchema.optional(),
    batchSize: intAtLeast(1).optional(),
    indexOffset: intAtLeast(0).max(Number.MAX_SAFE_INTEGER, { error: 'integer >= 0' }).optional(),
    onProgress: fnSchema<(p: GenerateProgress) => void>().optional(),
    signal: signalSchema.optional(),
    },
    { error: 'an options object' },
  );
  const o = parseOptions(schema, withClassIds(options, gen), 'generate');
  gen.handle('generate'); // throws when disposed
  const tok = base.tokenizer;
  if (tok) checkPair(gen, tok, 'generate');
  const labels: number[] = o.classLabels;
  const batchSize = o.batchSize ?? 32;
  const indexOffset = o.indexOffset ?? 0;
  const N = cfg.seqLen;
  const total = labels.length;
  const tokens: Int32Array[] = [];
  const images: RgbImage[] | undefined = tok ? [] : undefined;
  const addon = native();
  const report = (imagesDone: number, fraction: number) => o.onProgress?.({ imagesDone, imagesTotal: total, fraction });
  for (let start = 0; start < total; start += batchSize) {
    const batch = labels.slice(start, start + batchSize);
    const b = batch.length;
    const flat = await gen.exclusive(
      (h) =>
        cancellable(o.signal, (jobId) =>
          addon.rarGenerate(h, {
            classIds: Int32Array.from(batch),
            ...resolveSampling(o, gen.sampling),
            seed: String(o.seed ?? 0),
            indexOffset: indexOffset + start,
            jobId,
            onProgress: o.onProgress ? (done, steps) => report(start, (start + (b * done) / Math.max(1, steps)) / total) : undefined,
          }),
        ),
      'generate',
    );
    if (flat.length !== b * N) throw new Error(`native rarGenerate returned ${flat.length} tokens, expected ${b} x ${N}`);
    for (let i = 0; i < b; i++) tokens.push(flat.slice(i * N, (i + 1) * N));
    if (tok && images) {
      const out = await tok.exclusive((h) => cancellable(o.signal, () => addon.vqDecode(h, flat, b)), 'generate');
      images.push(...decoderOutputToImages(out, b, tok.resolution));
    }
    report(start + b, (start + b) / total);
  }
  return images ? { classLabels: labels, tokens, images } : { classLabels: labels, tokens };
}

// ---------------------------------------------------------------------------------
// Tokenizer: decode and encode

/** Token sequences: one array per image, or one flat array of a multiple of the tokens per image. */
export type TokenBatch = readonly (readonly number[] | Int32Array)[] | Int32Array;

function checkTokens(tok: Tokenizer, tokens: unknown): Int32Array {
  const T = tok.numTokens;
  const V = tok.config.codebookSize;
  const expect = `integer between 0 and ${V - 1}`;
  if (tokens instanceof Int32Array) {
    if (tokens.length === 0 || tokens.length % T !== 0)
      throw new ValidationError(`Expected a flat Int32Array of a multiple of ${T} tokens for tokens but received length ${tokens.length}`);
    for (let i = 0; i < tokens.length; i++) {
      const v = tokens[i]!;
      if (v < 0 || v >= V) throw new ValidationError(`Expected ${expect} for tokens[${i}] but received ${v}`);
    }
    return tokens;
  }
  if (!Array.isArray(tokens) || tokens.length === 0) throw new ValidationError(`Expected a non-empty array of token sequences for tokens but received ${describeValue(tokens)}`);
  const flat = new Int32Array(tokens.length * T);
  tokens.forEach((seq: unknown, b) => {
    const arr = ArrayBuffer.isView(seq) ? (seq as unknown as ArrayLike<unknown>) : Array.isArray(seq) ? seq : undefined;
    if (!arr || arr.length !== T) throw new ValidationError(`Expected an array of ${T} tokens for tokens[${b}] but received ${describeValue(seq)}`);
    for (let i = 0; i < T; i++) {
      const v = arr[i];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= V) throw new ValidationError(`Expected ${expect} for tokens[${b}][${i}] but received ${describeValue(v)}`);
      flat[b * T + i] = v;
    }
  });
  return flat;
}

const BatchOptionsSchema = z.strictObject({ batchSize: intAtLeast(1).optional(), signal: signalSchema.optional() }, { error: 'an options object' });

export interface BatchOptions {
  /** Images per native call (default 16). */
  batchSize?: number;
  signal?: AbortSignal;
}

/** Decodes token sequences to 8-bit RGB images (clamped, x255, truncated). */
export async function decode(tokenizer: Tokenizer, tokens: TokenBatch, options: BatchOptions = {}): Promise<RgbImage[]> {
  const tok = parseOptions(tokenizerSchema, tokenizer, 'decode', 'tokenizer');
  const o = parseOptions(BatchOptionsSchema, options, 'decode');
  tok.handle('decode');
  const flat = checkTokens(tok, tokens);
  const T = tok.numTokens;
  const B = flat.length / T;
  const bs = o.batchSize ?? 16;
  const out: RgbImage[] = [];
  const addon = native();
  for (let s = 0; s < B; s += bs) {
    const b = Math.min(bs, B - s);
    const chunk = flat.subarray(s * T, (s + b) * T).slice();
    const res = await tok.exclusive((h) => cancellable(o.signal, () => addon.vqDecode(h, chunk, b)), 'decode');
    out.push(...decoderOutputToImages(res, b, tok.resolution));
  }
  return out;
}

/** Encodes RGB images (each resolution x resolution) to token sequences. */
export async function encode(tokenizer: Tokenizer, images: readonly RgbImage[], options: BatchOptions = {}): Promise<Int32Array[]> {
  const tok = parseOptions(tokenizerSchema, tokenizer, 'encode', 'tokenizer');
  const o = parseOptions(BatchOptionsSchema, options, 'encode');
  tok.handle('encode');
  if (!Array.isArray(images) || images.length === 0) throw new ValidationError(`Expected a non-empty array of RGB images for images but received ${describeValue(images)}`);
  const R = tok.resolution;
  images.forEach((img, i) => {
    if (!img || typeof img !== 'object' || !(img.data instanceof Uint8Array) || img.data.length !== img.width * img.height * 3)
      throw new ValidationError(`Expected an RGB image {width, height, data: Uint8Array} for images[${i}] but received ${describeValue(img)}`);
    if (img.width !== R || img.height !== R)
      throw new ValidationError(`Expected a ${R}x${R} image for images[${i}] but received ${img.width}x${img.height} (center-crop it first, e.g. centerCropArr)`);
  });
  const T = tok.numTokens;
  const bs = o.batchSize ?? 16;
  const out: Int32Array[] = [];
  const addon = native();
  for (let s = 0; s < images.length; s += bs) {
    const batch = images.slice(s, s + bs);
    const pixels = imagesToPixels(batch);
    const res = await tok.exclusive((h) => cancellable(o.signal, () => addon.vqEncode(h, pixels, batch.length)), 'encode');
    for (let i = 0; i < batch.length; i++) out.push(res.tokens.slice(i * T, (i + 1) * T));
  }
  return out;
}
