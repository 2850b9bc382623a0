// FID, sFID, Inception Score, precision and recall as OpenAI's ADM evaluator
// (guided-diffusion evaluations/evaluator.py) computes them, on top of the native
// InceptionV3 (lib/inception.ts) and metrics (src/eval/).
//
//   const r = await evaluateNpz('VIRTUAL_imagenet256_labeled.npz', 'samples.npz');
//   // { fid, sfid, inceptionScore, precision, recall, ... }
//
// Like evaluator.py: images are `arr_0` (N, H, W, 3) uint8 of each .npz, read in
// batches (never whole: 50,000 256x256 images are 9.8 GB); when an .npz also holds
// `mu, sigma, mu_s, sigma_s` those statistics are used instead of its images' (ADM's
// reference batches carry them), while precision/recall always use the images' pool3
// features. The Inception Score is computed on the sample batch only. See
// src/eval/metrics.h for the numerics (float64 statistics, float32 k-NN distances).
import { z } from 'zod';
import { openNpz, type NpzFile, type NpyArray, type NpyHeader } from './io/index.js';
import { RargenIOError } from './io/errors.js';
import { deviceSchema, fnSchema, intBetween, parseOptions, signalSchema, ValidationError } from './validate.js';
import { findInceptionWeights, loadInception, InceptionV3, LOGITS_DIM, POOL3_DIM, SPATIAL_DIM } from './inception.js';
import { native, type NativeFeatureStats } from './native.js';
import type { DeviceSpec } from './device.js';
import { shapeToString } from './tensor.js';
import type { Dist } from './dist.js';

/** A Gaussian fit of features: mu (D) and sigma (D x D, row-major), float64. */
export interface FeatureGaussian {
  mu: Float64Array;
  sigma: Float64Array;
  /** Rows it was computed from (absent when read from a file). */
  count?: number;
}

/** Streaming mean and covariance (np.mean(axis=0), np.cov(rowvar=False)) of feature rows, in float64. */
export class FeatureStatistics {
  readonly dim: number;
  #handle: NativeFeatureStats;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(dim: number, threads = 0) {
    if (!Number.isSafeInteger(dim) || dim < 1) throw new ValidationError(`Expected an integer >= 1 for dim but received ${String(dim)}`);
    this.dim = dim;
    this.#handle = native().featureStatsCreate(dim, threads);
  }

  /** Adds rows (rows, dim) of float32 features. */
  add(features: Float32Array, rows = features.length / this.dim): Promise<void> {
    if (!(features instanceof Float32Array)) return Promise.reject(new ValidationError('Expected a Float32Array for features'));
    if (!Number.isSafeInteger(rows) || rows < 0 || rows * this.dim !== features.length)
      return Promise.reject(new ValidationError(`Expected features of ${rows} x ${this.dim} = ${rows * this.dim} values but received ${features.length}`));
    const run = this.#queue.then(() => native().featureStatsAdd(this.#handle, features, rows));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** mu and sigma of everything added (needs at least 2 rows). */
  async result(): Promise<FeatureGaussian> {
    await this.#queue;
    return native().featureStatsResult(this.#handle);
  }
}

function checkGaussian(g: FeatureGaussian, name: string): number {
  if (!(g?.mu instanceof Float64Array) || !(g?.sigma instanceof Float64Array)) throw new ValidationError(`Expected Float64Array mu and sigma for ${name}`);
  const D = g.mu.length;
  if (D < 1 || g.sigma.length !== D * D) throw new ValidationError(`Expected sigma of ${D} x ${D} values for ${name} (mu has ${D}) but received ${g.sigma.length}`);
  return D;
}

/** Frechet distance |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)) (FID on pool3, sFID on spatial features). */
export async function frechetDistance(a: FeatureGaussian, b: FeatureGaussian, threads = 0): Promise<number> {
  const da = checkGaussian(a, 'the first statistics');
  const db = checkGaussian(b, 'the second statistics');
  if (da !== db) throw new ValidationError(`The two statistics have different dimensions: ${da} and ${db}`);
  return native().frechetDistance(a.mu, a.sigma, b.mu, b.sigma, threads);
}

/** ADM's Inception Score of logits (rows, classes): mean over splits of exp(mean KL(p(y|x) || p(y))). */
export async function inceptionScore(logits: Float32Array, opts: { classes?: number; splitSize?: number } = {}): Promise<number> {
  const classes = opts.classes ?? LOGITS_DIM;
  const split = opts.splitSize ?? 5000;
  if (!(logits instanceof Float32Array)) throw new ValidationError('Expected a Float32Array for logits');
  if (!Number.isSafeInteger(classes) || classes < 1 || logits.length % classes !== 0 || logits.length === 0)
    throw new ValidationError(`Expected logits of (rows, ${classes}) but received ${logits.length} values`);
  if (!Number.isSafeInteger(split) || split < 1) throw new ValidationError(`Expected an integer >= 1 for splitSize but received ${String(split)}`);
  return (await native().inceptionScore(logits, logits.length / classes, classes, split)).score;
}

export interface PrecisionRecallOptions {
  /** Nearest neighbours for the manifold radii (ADM: 3). */
  k?: number;
  /** Where the distance products run ('cpu', 'cuda:N'; default 'cpu'). */
  device?: string;
  threads?: number;
  onProgress?: (done: number, total: number) => void;
}

/** ADM's improved precision (samples inside the reference manifold) and recall (references inside the sample manifold). */
export function precisionRecall(ref: Float32Array, sample: Float32Array, dim: number, opts: PrecisionRecallOptions = {}): Promise<{ precision: number; recall: number }> {
  if (!(ref instanceof Float32Array) || !(sample instanceof Float32Array)) return Promise.reject(new ValidationError('Expected Float32Array features for ref and sample'));
  if (!Number.isSafeInteger(dim) || dim < 1 || ref.length % dim || sample.length % dim)
    return Promise.reject(new ValidationError(`Expected features of (rows, ${dim}) but received ${ref.length} and ${sample.length} values`));
  const k = opts.k ?? 3;
  const nr = ref.length / dim;
  const ns = sample.length / dim;
  if (nr <= k || ns <= k) return Promise.reject(new ValidationError(`precision/recall with k=${k} needs more than ${k} feature vectors in each set but received ${nr} reference and ${ns} sample vectors`));
  return native().precisionRecall(ref, nr, sample, ns, dim, { k, device: opts.device ?? 'cpu', threads: opts.threads ?? 0, onProgress: opts.onProgress });
}

// ---------------------------------------------------------------------------------
// .npz batches

/** The `arr_0` images of an .npz, read by rows. */
export class ImageNpz {
  private constructor(
    readonly path: string,
    private readonly npz: NpzFile,
    readonly count: number,
    readonly height: number,
    readonly width: number,
  ) {}

  /** Opens an .npz and checks that arr_0 is uint8 (N, H, W, 3) in C order. */
  static async open(path: string): Promise<ImageNpz> {
    const npz = await openNpz(path);
    try {
      if (!npz.has('arr_0')) throw new RargenIOError(path, `${path}: no arr_0 in the archive (it has ${npz.names.join(', ') || 'nothing'}); expected arr_0 = uint8 images (N, H, W, 3) as np.savez writes them`);
      const h: NpyHeader = await npz.header('arr_0');
      const bad = (why: string) => new RargenIOError(path, `${path}: arr_0 must be uint8 images (N, H, W, 3) but ${why}`);
      if (h.dtype !== 'uint8') throw bad(`has dtype ${h.dtype} (${h.descr}), shape ${shapeToString(h.shape)}`);
      if (h.shape.length !== 4 || h.shape[3] !== 3) throw bad(`has shape ${shapeToString(h.shape)}`);
      if (h.fortranOrder) throw bad('is stored in Fortran order; save it with np.ascontiguousarray');
      const [n, H, W] = h.shape as [number, number, number, number];
      if (n < 1 || H < 1 || W < 1) throw bad(`is empty: shape ${shapeToString(h.shape)}`);
      return new ImageNpz(path, npz, n, H, W);
    } catch (e) {
      await npz.close();
      throw e;
    }
  }

  /** Images start..end-1 as one Uint8Array ((end-start), H, W, 3). */
  async read(start: number, end: number): Promise<Uint8Array> {
    const a = await this.npz.readRows('arr_0', start, end);
    return a.data as Uint8Array;
  }

  /** mu, sigma, mu_s, sigma_s when the archive has them (ADM reference batches), else undefined. */
  async storedStatistics(): Promise<{ pool: FeatureGaussian; spatial: FeatureGaussian } | undefined> {
    if (!this.npz.has('mu')) return undefined;
    const get = async (name: string, shape: number[]): Promise<Float64Array> => {
      if (!this.npz.has(name)) throw new RargenIOError(this.path, `${this.path}: has mu but no ${name}; a reference batch needs mu, sigma, mu_s and sigma_s`);
      const a: NpyArray = await this.npz.read(name);
      if (a.shape.length !== shape.length || a.shape.some((d, i) => d !== shape[i]))
        throw new RargenIOError(this.path, `${this.path}: ${name} has shape ${shapeToString(a.shape)}, expected ${shapeToString(shape)}`);
      if (a.data instanceof Float64Array) return a.data;
      if (a.data instanceof Float32Array) return Float64Array.from(a.data);
      throw new RargenIOError(this.path, `${this.path}: ${name} has dtype ${a.dtype}, expected float64 or float32`);
    };
    return {
      pool: { mu: await get('mu', [POOL3_DIM]), sigma: await get('sigma', [POOL3_DIM, POOL3_DIM]) },
      spatial: { mu: await get('mu_s', [SPATIAL_DIM]), sigma: await get('sigma_s', [SPATIAL_DIM, SPATIAL_DIM]) },
    };
  }

  close(): Promise<void> {
    return this.npz.close();
  }
}

// ---------------------------------------------------------------------------------
// The whole evaluation

export interface EvaluateProgress {
  stage: 'reference' | 'sample' | 'statistics' | 'precision-recall';
  done: number;
  total: number;
}

export interface EvaluateOptions {
  /** Inception weights file, or a loaded model (default: findInceptionWeights()). */
  inception?: string | InceptionV3;
  device?: DeviceSpec;
  /** Images per Inception batch (default 32). */
  batchSize?: number;
  /** CPU threads (0 = all). */
  threads?: number;
  /** Inception Score split size (ADM: 5000). */
  splitSize?: number;
  /** k of the k-NN precision/recall (ADM: 3). */
  k?: number;
  onProgress?: (p: EvaluateProgress) => void;
  /** Aborting it stops at the next batch with an AbortError. */
  signal?: AbortSignal;
}

export interface EvaluateResult {
  fid: number;
  sfid: number;
  inceptionScore: number;
  precision: number;
  recall: number;
  referenceImages: number;
  sampleImages: number;
  /** Whether the reference statistics came from the reference .npz (mu, sigma, mu_s, sigma_s). */
  referenceStatsFromFile: boolean;
  device: string;
}

const EvaluateOptionsSchema = z.strictObject({
  inception: z.union([z.string().min(1), z.instanceof(InceptionV3)], { error: 'a weights file path or an InceptionV3' }).optional(),
  device: deviceSchema.optional(),
  batchSize: intBetween(1, 4096).optional(),
  threads: intBetween(0, 4096).optional(),
  splitSize: intBetween(1, 2 ** 31).optional(),
  k: intBetween(1, 1000).optional(),
  onProgress: fnSchema<(p: EvaluateProgress) => void>().optional(),
  signal: signalSchema.optional(),
});

interface Activations {
  pool3: Float32Array;
  logits?: Float32Array;
  stats?: { pool: FeatureStatistics; spatial: FeatureStatistics };
}

/** Runs Inception over every image of `src` in batches (the next batch is read while one runs). */
async function activations(net: InceptionV3, src: ImageNpz, batchSize: number, wantLogits: boolean, wantStats: boolean, threads: number, stage: EvaluateProgress['stage'], onProgress?: (p: EvaluateProgress) => void, dist?: Dist): Promise<Activations> {
  const n = src.count;
  const kept = !dist || dist.isRoot ? n : 0; // under mpirun rank 0 alone keeps the features
  const out: Activations = { pool3: new Float32Array(kept * POOL3_DIM) };
  if (wantLogits) out.logits = new Float32Array(kept * LOGITS_DIM);
  if (wantStats && kept) out.stats = { pool: new FeatureStatistics(POOL3_DIM, threads), spatial: new FeatureStatistics(SPATIAL_DIM, threads) };
  onProgress?.({ stage, done: 0, total: n });
  if (dist && dist.size > 1) return activationsOnRanks(net, src, batchSize, out, { logits: wantLogits, spatial: wantStats }, stage, onProgress, dist);
  let next: Promise<Uint8Array> | undefined = src.read(0, Math.min(batchSize, n));
  for (let start = 0; start < n; start += batchSize) {
    const end = Math.min(n, start + batchSize);
    const images = await next!;
    next = end < n ? src.read(end, Math.min(n, end + batchSize)) : undefined;
    next?.catch(() => undefined); // surfaced when awaited
    const f = await net.features(images, end - start, src.height, src.width);
    await keep(out, start, end - start, f.pool3, f.logits, f.spatial);
    onProgress?.({ stage, done: end, total: n });
  }
  return out;
}

/** One batch's features into `out`: pool3 and logits at their rows, the statistics in batch order. */
async function keep(out: Activations, start: number, rows: number, pool3: Float32Array, logits: Float32Array, spatial: Float32Array): Promise<void> {
  out.pool3.set(pool3, start * POOL3_DIM);
  out.logits?.set(logits, start * LOGITS_DIM);
  if (out.stats) await Promise.all([out.stats.pool.add(pool3, rows), out.stats.spatial.add(spatial, rows)]);
}

/**
 * Under mpirun: batch b is rank b % N's; in round t every rank runs batch t*N + rank
 * and the features are gathered to rank 0, which so receives batches t*N..t*N+N-1 in
 * order and keeps them exactly as one process would (the same batches, added to the
 * statistics in the same order: the same numbers). The other ranks keep nothing.
 */
async function activationsOnRanks(net: InceptionV3, src: ImageNpz, batchSize: number, out: Activations, want: { logits: boolean; spatial: boolean }, stage: EvaluateProgress['stage'], onProgress: ((p: EvaluateProgress) => void) | undefined, dist: Dist): Promise<Activations> {
  const n = src.count;
  const N = dist.size;
  const batches = Math.ceil(n / batchSize);
  const rowsOf = (b: number) => (b < batches ? Math.min(n, (b + 1) * batchSize) - b * batchSize : 0);
  const width = POOL3_DIM + (want.logits ? LOGITS_DIM : 0) + (want.spatial ? SPATIAL_DIM : 0);
  const read = (b: number) => (b < batches ? src.read(b * batchSize, b * batchSize + rowsOf(b)) : Promise.resolve(new Uint8Array(0)));
  let next = read(dist.rank);
  for (let t = 0; t * N < batches; t++) {
    const b = t * N + dist.rank;
    const rows = rowsOf(b);
    const images = await next;
    next = read(b + N);
    next.catch(() => undefined); // surfaced when awaited
    // this rank's rows: [pool3 | logits | spatial] per row block
    const packed = new Float32Array(rows * width);
    if (rows > 0) {
      const f = await net.features(images, rows, src.height, src.width);
      packed.set(f.pool3, 0);
      let o = rows * POOL3_DIM;
      if (want.logits) packed.set(f.logits, o), (o += rows * LOGITS_DIM);
      if (want.spatial) packed.set(f.spatial, o);
    }
    const all = dist.gather(packed);
    if (!all) continue;
    let o = 0;
    for (let r = 0; r < N && t * N + r < batches; r++) {
      const bb = t * N + r;
      const m = rowsOf(bb);
      const take = (d: number) => all.subarray(o, (o += m * d));
      const pool3 = take(POOL3_DIM);
      const logits = want.logits ? take(LOGITS_DIM) : new Float32Array(0);
      const spatial = want.spatial ? take(SPATIAL_DIM) : new Float32Array(0);
      await keep(out, bb * batchSize, m, pool3, logits, spatial);
    }
    onProgress?.({ stage, done: Math.min(n, (t + 1) * N * batchSize), total: n });
  }
  return out;
}

/**
 * ADM's evaluator on two .npz files: FID, sFID, Inception Score (of the samples),
 * precision and recall. `refPath` is the reference batch (e.g. ADM's
 * VIRTUAL_imagenet256_labeled.npz), `samplePath` the generated images.
 */
export async function evaluateNpz(refPath: string, samplePath: string, options: EvaluateOptions = {}): Promise<EvaluateResult> {
  return (await evaluate(refPath, samplePath, options))!;
}

/**
 * evaluateNpz under mpirun (`mpirun -np N rargen fid ...`): the Inception passes are
 * split over the ranks (batch b on rank b % N) and the features gathered to rank 0,
 * which computes the metrics: the same numbers as one process with the same batch
 * size. Resolves to the result on rank 0 and to null on the other ranks. Every rank
 * must call it with the same files and options.
 */
export async function evaluateNpzOnRanks(refPath: string, samplePath: string, options: EvaluateOptions, dist: Dist): Promise<EvaluateResult | null> {
  return evaluate(refPath, samplePath, options, dist);
}

async function evaluate(refPath: string, samplePath: string, options: EvaluateOptions, dist?: Dist): Promise<EvaluateResult | null> {
  const opts0 = parseOptions(EvaluateOptionsSchema, options, 'evaluateNpz');
  const signal = opts0.signal;
  signal?.throwIfAborted();
  // every stage reports progress after each batch: the abort check rides on it
  const user = opts0.onProgress;
  const opts = { ...opts0, onProgress: signal || user ? (p: EvaluateProgress) => (signal?.throwIfAborted(), user?.(p)) : undefined };
  if (typeof refPath !== 'string' || !refPath) throw new ValidationError('Expected a file path for the reference .npz');
  if (typeof samplePath !== 'string' || !samplePath) throw new ValidationError('Expected a file path for the sample .npz');
  const batchSize = opts.batchSize ?? 32;
  const threads = opts.threads ?? 0;
  const k = opts.k ?? 3;
  const ref = await ImageNpz.open(refPath);
  let sam: ImageNpz | undefined;
  let net: InceptionV3 | undefined;
  const ownNet = !(opts.inception instanceof InceptionV3);
  try {
    sam = await ImageNpz.open(samplePath);
    for (const [f, name] of [
      [ref, 'reference'],
      [sam, 'sample'],
    ] as const)
      if (f.count <= k) throw new RargenIOError(f.path, `${f.path}: the ${name} batch has ${f.count} image${f.count === 1 ? '' : 's'}; precision/recall need more than k=${k}`);
    const refStored = await ref.storedStatistics();
    const samStored = await sam.storedStatistics();
    net = opts.inception instanceof InceptionV3 ? opts.inception : await loadInception(findInceptionWeights(opts.inception), { device: opts.device as DeviceSpec | undefined, threads });

    const refActs = await activations(net, ref, batchSize, false, !refStored, threads, 'reference', opts.onProgress, dist);
    const samActs = await activations(net, sam, batchSize, true, !samStored, threads, 'sample', opts.onProgress, dist);
    if (dist && !dist.isRoot) return null; // rank 0 has every feature and computes the metrics

    opts.onProgress?.({ stage: 'statistics', done: 0, total: 3 });
    const refPool = refStored?.pool ?? (await refActs.stats!.pool.result());
    const refSpatial = refStored?.spatial ?? (await refActs.stats!.spatial.result());
    const samPool = samStored?.pool ?? (await samActs.stats!.pool.result());
    const samSpatial = samStored?.spatial ?? (await samActs.stats!.spatial.result());
    const inceptionScoreValue = await inceptionScore(samActs.logits!, { splitSize: opts.splitSize ?? 5000 });
    opts.onProgress?.({ stage: 'statistics', done: 1, total: 3 });
    const fid = await frechetDistance(samPool, refPool, threads);
    opts.onProgress?.({ stage: 'statistics', done: 2, total: 3 });
    const sfid = await frechetDistance(samSpatial, refSpatial, threads);
    opts.onProgress?.({ stage: 'statistics', done: 3, total: 3 });
    const pr = await precisionRecall(refActs.pool3, samActs.pool3, POOL3_DIM, {
      k,
      device: net.device,
      threads,
      onProgress: opts.onProgress ? (done, total) => opts.onProgress!({ stage: 'precision-recall', done, total }) : undefined,
    });
    return {
      fid,
      sfid,
      inceptionScore: inceptionScoreValue,
      precision: pr.precision,
      recall: pr.recall,
      referenceImages: ref.count,
      sampleImages: sam.count,
      referenceStatsFromFile: refStored !== undefined,
      device: net.device,
    };
  } finally {
    if (net && ownNet) net.dispose();
    await ref.close();
    await sam?.close();
  }
}
