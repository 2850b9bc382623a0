// The FID feature extractor: TF1-exact InceptionV3 (torch-fidelity's
// FeatureExtractorInceptionV3, the network of OpenAI's ADM evaluator), native
// (src/model/inception.cc). This file finds and loads its weights and validates
// every call before it reaches the addon.
//
//   const net = await loadInception(findInceptionWeights());   // or an explicit path
//   const { pool3, spatial, logits } = await net.features(images, batch, height, width);
//   net.dispose();
//
// Weights: `weights-inception-2015-12-05-6726825d.pth` from torch-fidelity's release
// (or pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, the same state dict), in
// the cache folder ($RARGEN_CACHE, else ~/.cache/rargen) where `rargen download
// inception` puts it, or anywhere with --inception.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { openCheckpoint } from './io/index.js';
import { resolveDevice, type DeviceSpec } from './device.js';
import { deviceSchema, intBetween, parseOptions, ValidationError } from './validate.js';
import { native, type NativeInception } from './native.js';
import { expectedInceptionTensors, validateInceptionWeights, WeightsMismatchError } from './config.js';
import type { Checkpoint } from './tensor.js';

// The weights' URLs and file names and the cache folder are in releases.ts (the manifest of downloads).
import { cacheDir, INCEPTION_WEIGHTS_ALT_FILE, INCEPTION_WEIGHTS_ALT_URL, INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL } from './releases.js';
export { cacheDir, INCEPTION_WEIGHTS_ALT_FILE, INCEPTION_WEIGHTS_ALT_URL, INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL };

export const POOL3_DIM = 2048;
export const SPATIAL_DIM = 2023; // 17 x 17 x 7
export const LOGITS_DIM = 1008;

/** Thrown when no Inception weights file can be found; the message says where to get it and where to put it. */
export class MissingWeightsError extends Error {
  override name = 'MissingWeightsError';
  readonly code = 'RARGEN_MISSING_WEIGHTS';
}

/**
 * The Inception weights file: `explicit` when given (it must exist), else the first of
 * weights-inception-...pth / pt_inception-...pth in the cache folder.
 */
export function findInceptionWeights(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit !== undefined) {
    if (!existsSync(explicit)) throw new MissingWeightsError(`Inception weights not found at ${explicit}. ${howToGetWeights(env)}`);
    return explicit;
  }
  const dir = cacheDir(env);
  for (const f of [INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_ALT_FILE]) {
    const p = join(dir, f);
    if (existsSync(p)) return p;
  }
  throw new MissingWeightsError(`Inception weights not found in ${dir}. ${howToGetWeights(env)}`);
}

function howToGetWeights(env: NodeJS.ProcessEnv): string {
  const dir = cacheDir(env);
  return (
    `With internet access run 'rargen download inception'. Otherwise download ${INCEPTION_WEIGHTS_URL} ` +
    `(or ${INCEPTION_WEIGHTS_ALT_URL}) and put it at ${join(dir, INCEPTION_WEIGHTS_FILE)} ` +
    `(the cache folder is $RARGEN_CACHE, else ~/.cache/rargen), or pass its path with --inception FILE.`
  );
}

const LoadInceptionOptionsSchema = z.strictObject({
  device: deviceSchema.optional(),
  threads: intBetween(0, 4096).optional(),
});

export interface LoadInceptionOptions {
  /** auto (default), cpu, cuda, cuda:N. */
  device?: DeviceSpec;
  /** CPU threads (0 = all, the default). */
  threads?: number;
}

export interface InceptionFeatures {
  /** (B, 2048): FID features. */
  pool3: Float32Array;
  /** (B, 2023): Mixed_6d.branch1x1 channels 0..6 on the 17x17 grid, channels-last: sFID features. */
  spatial: Float32Array;
  /** (B, 1008): pool3 @ fc.weight^T without bias: Inception Score logits. */
  logits: Float32Array;
}

/** The FID InceptionV3 on one device. Calls are queued: one batch runs at a time. */
export class InceptionV3 {
  #handle: NativeInception | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  readonly device: string;
  readonly deviceReason: string;

  /** Use loadInception(). */
  constructor(handle: NativeInception, device: string, deviceReason: string) {
    this.#handle = handle;
    this.device = device;
    this.deviceReason = deviceReason;
  }

  /**
   * Features of uint8 RGB images (batch, height, width, 3), channels-last, any size
   * (resized to 299x299 as TF1 did).
   */
  features(images: Uint8Array, batch: number, height: number, width: number): Promise<InceptionFeatures> {
    const handle = this.#handle;
    if (!handle) return Promise.reject(new Error('rargen: this InceptionV3 was disposed'));
    checkImages(images, batch, height, width, 'features');
    const run = this.#queue.then(() => native().inceptionForward(handle, images, batch, height, width));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Frees the native model (after queued batches finish). */
  dispose(): void {
    const handle = this.#handle;
    if (!handle) return;
    this.#handle = undefined;
    void this.#queue.then(() => native().inceptionFree(handle));
  }
}

function checkImages(images: unknown, batch: number, height: number, width: number, fn: string): void {
  for (const [name, v, max] of [
    ['batch', batch, 1 << 20],
    ['height', height, 1 << 16],
    ['width', width, 1 << 16],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 1 || v > max) throw new ValidationError(`Expected an integer between 1 and ${max} for ${name} in ${fn}() but received ${String(v)}`);
  }
  if (!(images instanceof Uint8Array)) throw new ValidationError(`Expected a Uint8Array of uint8 RGB images (batch, height, width, 3) for images in ${fn}() but received ${images === null ? 'null' : typeof images}`);
  const want = batch * height * width * 3;
  if (images.length !== want) throw new ValidationError(`Expected ${want} bytes (${batch} x ${height} x ${width} x 3) for images in ${fn}() but received ${images.length}`);
}

/**
 * Checks that an opened checkpoint is the FID Inception state dict: every tensor of the
 * addon's table (inceptionParamTable: the keys of pt_inception-2015-12-05-6726825d.pth)
 * with its shape and a float dtype, nothing else (the BatchNorm counters aside). Returns
 * the expected keys and shapes; throws a WeightsMismatchError naming the file and every
 * key that is wrong with what was expected.
 */
export function checkInceptionCheckpoint(ckpt: Checkpoint, path: string): Map<string, number[]> {
  try {
    validateInceptionWeights(ckpt.tensors);
  } catch (e) {
    if (!(e instanceof WeightsMismatchError)) throw e;
    throw new WeightsMismatchError(e.model, e.wrongShapes, e.missing, e.unexpected, e.wrongDtypes, `rargen: ${path} is not the FID Inception state dict (pt_inception-2015-12-05-6726825d.pth): ${e.message}`);
  }
  return expectedInceptionTensors();
}

/**
 * Loads the FID Inception weights (a torch state dict with the keys of
 * pt_inception-2015-12-05-6726825d.pth) onto a device. Throws naming missing,
 * unexpected or mis-shaped keys.
 */
export async function loadInception(path: string, options: LoadInceptionOptions = {}): Promise<InceptionV3> {
  const opts = parseOptions(LoadInceptionOptionsSchema, options, 'loadInception');
  const dev = resolveDevice(opts.device ?? 'auto');
  const n = native();
  const ckpt = await openCheckpoint(path);
  let handle: NativeInception | undefined;
  try {
    const expected = checkInceptionCheckpoint(ckpt, path);
    handle = n.inceptionCreate(dev.device, opts.threads ?? 0);
    for (const [name, shape] of expected) n.inceptionSetWeight(handle, name, await ckpt.readFloat32(name), shape);
    n.inceptionFinalize(handle);
  } catch (e) {
    if (handle) n.inceptionFree(handle);
    throw e;
  } finally {
    await ckpt.close();
  }
  return new InceptionV3(handle!, dev.device, dev.reason);
}

/**
 * TF1's tf.image.resize_bilinear (align_corners=False, no half-pixel centres), as the
 * extractor applies it: uint8 (batch, height, width, 3) -> float32 (batch, 3, outHeight, outWidth) in [0, 255].
 */
export function tf1ResizeBilinear(images: Uint8Array, batch: number, height: number, width: number, outHeight = 299, outWidth = 299): Float32Array {
  checkImages(images, batch, height, width, 'tf1ResizeBilinear');
  for (const [name, v] of [
    ['outHeight', outHeight],
    ['outWidth', outWidth],
  ] as const)
    if (!Number.isSafeInteger(v) || v < 1 || v > 1 << 16) throw new ValidationError(`Expected an integer between 1 and 65536 for ${name} in tf1ResizeBilinear() but received ${String(v)}`);
  return native().tf1ResizeBilinear(images, batch, height, width, outHeight, outWidth);
}
