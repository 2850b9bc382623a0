// Loads the native addon (prebuilt under prebuilds/, or built under build/) with
// node-gyp-build; a prebuilt binary is first loaded in a child process, so that one
// built for a newer system (glibc, libstdc++) is explained instead of failing or
// crashing here. When it cannot be loaded, the error lists the likely causes and
// fixes, as sharp does. $RARGEN_ADDON_PATH loads that .node file instead. Everything else in lib/ goes through `native()`.
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** The package root: the nearest folder above this file whose package.json is rargen's. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if (JSON.parse(readFileSync(pj, 'utf8')).name === 'rargen') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('rargen: could not find the package root (package.json) above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export interface BuildInfo {
  cuda: boolean;
  arch: string;
  avx2: boolean;
  hardwareThreads: number;
}

export interface CudaDevice {
  index: number;
  name: string;
  totalMemory: number;
  computeCapability: string;
}

export interface CudaStatus {
  built: boolean;
  available: boolean;
  reason: string;
  driverVersion?: number;
  runtimeVersion?: number;
  devices: CudaDevice[];
}

/** Opaque handle to a native model (generator or tokenizer) living on one backend. */
export interface NativeModel {
  readonly __nativeModel: unique symbol;
}

/** Generator config as the native side takes it (MODEL.md names). */
export interface NativeRarConfig {
  hiddenSize: number; // C
  depth: number;
  numHeads: number; // H, head dim D = C / H
  mlpDim: number; // I
  seqLen: number; // N (image tokens)
  codebookSize: number; // V
  numClasses: number; // K
  posEmbedRows: number; // rows of pos_embed / target_aware_pos_embed (N + 1024 in the releases)
  timestepRows: number; // rows of timesteps_embeddings (N + 100)
}

/** MaskGIT-VQGAN config (MODEL.md "Tokenizer"). */
export interface NativeVqConfig {
  hiddenChannels: number;
  channelMult: number[];
  numResBlocks: number;
  zChannels: number;
  codebookSize: number;
  resolution: number; // pixels; token grid = resolution / 2^(len(channelMult)-1)
}

/** The sampling options of an image, every one given (resolveSampling in lib/config.ts fills them). */
export interface NativeSampling {
  guidanceScale: number; // 0 = no guidance
  guidanceScalePow: number;
  temperature: number;
  topK: number; // 0 = off
  topP: number; // 1 = off
  greedy: boolean;
}

export interface NativeGenerateOptions extends NativeSampling {
  /** Class ids 0..K-1, one per image (B). */
  classIds: Int32Array;
  /** Seed as a decimal string (64-bit). */
  seed: string;
  /**
   * Global index of image 0 of this call. Image i's random stream depends only on
   * (seed, indexOffset + i, step), so splitting a run into batches never changes it.
   */
  indexOffset: number;
  /** Called on the main thread with (stepsDone, stepsTotal). */
  onProgress?: (done: number, total: number) => void;
  /** Cancellation: the job id passed to cancel(). */
  jobId?: number;
}

/** Opaque handle to a native decode session (continuous batching on one generator). */
export interface NativeSession {
  readonly __nativeSession: unique symbol;
}

/** One sequence of a decode session, every field given (lib/session.ts fills the defaults). */
export interface NativeSequenceSpec extends NativeSampling {
  classId: number;
  /** Decimal string (64-bit). */
  seed: string;
  /** Image index in the seed's stream. */
  index: number;
}

/**
 * The raw addon. Its functions re-check their arguments; call them through lib/
 * wrappers, which validate first. Long calls return promises and run off the main
 * thread. Device strings: 'cpu', 'cuda', 'cuda:N'.
 */
export interface NativeAddon {
  buildInfo(): BuildInfo;
  cudaStatus(): CudaStatus;
  /**
   * Backend::supports of the device's backend (src/backend.h): whether `op` (an op name of
   * src/backend.h, e.g. 'attention', 'linear_backward') runs with `dtype` there (the KV
   * cache's for attention, the weights' for linear/conv2d). Without op and dtype: every
   * op -> the dtypes it runs. For skipping by capability instead of by device name.
   */
  backendSupports(device: string, op: string, dtype: 'f32' | 'f16' | 'bf16' | 'i32'): boolean;
  backendSupports(device: string): Record<string, Array<'f32' | 'f16' | 'bf16' | 'i32'>>;
  /** weightDtype: storage of matrices on the backend ('f32' exact, 'f16'/'bf16' fast). */
  createRar(config: NativeRarConfig, device: string, weightDtype: 'f32' | 'f16' | 'bf16'): NativeModel;
  createVq(config: NativeVqConfig, device: string): NativeModel;
  /** Copies (and converts) one state-dict tensor; throws naming the key and shapes on mismatch. */
  setWeight(model: NativeModel, name: string, data: Float32Array, shape: number[]): void;
  /** Throws listing the missing keys, if any. */
  finalize(model: NativeModel): void;
  free(model: NativeModel): void;
  /** Training-path forward: ids (B*N) image tokens, condition (B) embedding indices (V+1+k or V+K+1), orders (B*N). Logits (B, N+1, V). */
  rarForward(model: NativeModel, ids: Int32Array, condition: Int32Array, orders: Int32Array): Promise<Float32Array>;
  /**
   * Teacher-forced KV-cached decode: logits (B, N, V), row t from step t.
   * FIXTURE NOTE (verified by the lead with PyTorch): rar-tiny/decode.npz (step_logits,
   * full_logits, greedy_tokens) was computed with the weights AFTER the three AdamW
   * steps, i.e. adamw.npz's `param.<name>` arrays, NOT model.bin. forward.npz matches
   * model.bin. Load param.* from adamw.npz for every decode.npz comparison.
   */
  rarDecodeSteps(model: NativeModel, ids: Int32Array, condition: Int32Array): Promise<Float32Array>;
  /** Raster-order sampling with CFG. Tokens (B*N). */
  rarGenerate(model: NativeModel, opts: NativeGenerateOptions): Promise<Int32Array>;
  /** Tokens (B*HW) -> unclamped decoder output (B, 3, R, R). */
  vqDecode(model: NativeModel, tokens: Int32Array, batch: number): Promise<Float32Array>;
  /** Pixels (B, 3, R, R) in [0,1] -> latents (B, Cz, h, w) and tokens (B*h*w). */
  vqEncode(model: NativeModel, pixels: Float32Array, batch: number): Promise<{ latents: Float32Array; tokens: Int32Array }>;
  /** Requests cancellation of a running job; its promise rejects with an AbortError-like message. */
  cancel(jobId: number): void;

  // ---- decode session (src/binding_session.cc; wrapped by lib/session.ts) ----
  /** maxRows 0: as many KV rows as the memory budget allows. */
  sessionCreate(model: NativeModel, maxRows: number): NativeSession;
  sessionInfo(session: NativeSession): { maxRows: number; freeRows: number; active: number };
  /** Throws an Error with code 'RARGEN_SESSION_FULL' when the rows are not free. */
  sessionAdd(session: NativeSession, spec: NativeSequenceSpec): number;
  /** False for an unknown (or finished) id. */
  sessionCancel(session: NativeSession, id: number): boolean;
  /** progressed: [id, tokens] pairs. */
  sessionStep(session: NativeSession): Promise<{ progressed: Float64Array; finished: { id: number; tokens: Int32Array }[] }>;
  sessionDispose(session: NativeSession): void;

  // ---- evaluator (src/binding_eval.cc; wrapped by lib/inception.ts and lib/fid.ts) ----
  /** A TF1-exact FID InceptionV3 on `device` ('cpu', 'cuda', 'cuda:N'); threads 0 = all. */
  inceptionCreate(device: string, threads?: number): NativeInception;
  /** Copies one tensor of inceptionParamTable(); throws naming the key when it is not in the table or its shape differs. */
  inceptionSetWeight(model: NativeInception, name: string, data: Float32Array, shape: number[]): void;
  /** Folds BatchNorm and uploads; throws listing missing keys. */
  inceptionFinalize(model: NativeInception): void;
  /** uint8 images (B, H, W, 3) of any size -> pool3 (B*2048), spatial (B*2023, sFID), logits (B*1008, no bias). */
  inceptionForward(model: NativeInception, images: Uint8Array, batch: number, height: number, width: number): Promise<{ pool3: Float32Array; spatial: Float32Array; logits: Float32Array }>;
  inceptionFree(model: NativeInception): void;
  /** TF1 tf.image.resize_bilinear (no half-pixel centres): uint8 (B, H, W, 3) -> float32 (B, 3, oh, ow) in [0, 255]. */
  tf1ResizeBilinear(images: Uint8Array, batch: number, height: number, width: number, outHeight: number, outWidth: number): Float32Array;
  /** Streaming float64 mean/covariance of feature rows. */
  featureStatsCreate(dim: number, threads?: number): NativeFeatureStats;
  featureStatsAdd(stats: NativeFeatureStats, features: Float32Array, rows: number): Promise<void>;
  /** mu (dim) and sigma (dim*dim) as np.mean(axis=0) / np.cov(rowvar=False); needs count >= 2. */
  featureStatsResult(stats: NativeFeatureStats): { count: number; mu: Float64Array; sigma: Float64Array };
  /** |mu1-mu2|^2 + tr S1 + tr S2 - 2 tr sqrtm(S1 S2), float64. */
  frechetDistance(mu1: Float64Array, sigma1: Float64Array, mu2: Float64Array, sigma2: Float64Array, threads?: number): Promise<number>;
  /** ADM's Inception Score of logits (rows, classes) in splits of splitSize rows. */
  inceptionScore(logits: Float32Array, rows: number, classes: number, splitSize: number): Promise<{ score: number; splits: number[] }>;
  /** ADM's k-NN precision/recall (float32 squared distances; dot products on `device`). */
  precisionRecall(
    ref: Float32Array,
    nRef: number,
    sample: Float32Array,
    nSample: number,
    dim: number,
    opts?: { k?: number; device?: string; threads?: number; rowBlock?: number; colBlock?: number; onProgress?: (done: number, total: number) => void },
  ): Promise<{ precision: number; recall: number }>;

  // ---- training (src/binding_train.cc; wrapped by lib/train/native.ts) ----
  createTrainer(config: NativeRarConfig, device: string, opts: NativeTrainerOptions): NativeTrainer;
  trainInfo(t: NativeTrainer): NativeTrainerInfo;
  trainSetTensor(t: NativeTrainer, kind: Exclude<TrainTensorKind, 'grad'>, name: string, data: Float32Array): void;
  trainGetTensor(t: NativeTrainer, kind: TrainTensorKind, name: string): Float32Array;
  /** Forward + backward, gradients accumulated (zeroed first when batch.zeroGrad). */
  trainForwardBackward(t: NativeTrainer, batch: NativeTrainBatch): Promise<NativeTrainResult>;
  /** Global grad-norm clip + AdamW on every parameter; resolves with the norm before clipping. */
  trainOptimizerStep(t: NativeTrainer, opts: NativeOptimizerOptions): Promise<{ gradNorm: number }>;
  trainFree(t: NativeTrainer): void;
}

/** Opaque handle to the native FID InceptionV3. */
export interface NativeInception {
  readonly __nativeInception: unique symbol;
}

/** Opaque handle to a native streaming mean/covariance accumulator. */
export interface NativeFeatureStats {
  readonly __nativeFeatureStats: unique symbol;
}

let cached: NativeAddon | undefined;

/** Minimum Linux NVIDIA driver per CUDA major version (NVIDIA's minor-version-compatibility table). */
const MIN_DRIVER: Record<number, string> = { 11: '450.80.02', 12: '525.60.13', 13: '580' };

/** cudaStatus() with what to do added to a too-old-driver reason. */
export function explainCudaStatus(st: CudaStatus): CudaStatus {
  if (!/driver too old/i.test(st.reason) || !st.runtimeVersion) return st;
  const major = Math.floor(st.runtimeVersion / 1000);
  const need = MIN_DRIVER[major];
  return {
    ...st,
    reason:
      `${st.reason}; CUDA ${major}.x needs an NVIDIA driver >= ${need ?? 'the one of that CUDA release'}: update the driver, ` +
      'or build rargen against the CUDA toolkit installed here (`npm run build:native` in a clone of rargen, with that toolkit\'s nvcc on PATH)',
  };
}

/**
 * Loads `file` in a child process first: a prebuilt binary built on a newer system can
 * fail to load (GLIBC_/GLIBCXX_ versions) or crash the process, and a child's failure
 * is something to explain instead. Returns undefined when it loads.
 */
export function probeAddon(file: string): string | undefined {
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)}).buildInfo()`], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, RARGEN_DEBUG: '' } });
  if (r.status === 0) return undefined;
  const text = `${r.stderr ?? ''}`.split('\n').find((l) => /Error|not found|undefined symbol|invalid ELF/i.test(l)) ?? (r.error?.message || `exit ${r.status ?? r.signal}`);
  return text.trim().replace(/^Error: /, '');
}

/** What to do about an addon that does not load, from its error text. */
export function loadFailureHelp(message: string): string {
  const glibc = /GLIBC_(\d+\.\d+)/.exec(message);
  const glibcxx = /GLIBCXX_(\d+\.\d+\.\d+)|CXXABI_(\d+\.\d+\.\d+)/.exec(message);
  const lines: string[] = [];
  if (glibc) lines.push(`the prebuilt binary needs glibc >= ${glibc[1]} (this system's is older; \`ldd --version\` shows it)`);
  if (glibcxx) lines.push(`the prebuilt binary needs a newer libstdc++ (${glibcxx[0]}, GCC >= 12's)`);
  if (lines.length) lines.push('build the CPU backend from source instead: npm rebuild rargen --build-from-source (needs a C++17 compiler and python3)');
  return lines.map((l) => `  - ${l}\n`).join('');
}

export function native(): NativeAddon {
  if (cached) return cached;
  const root = packageRoot();
  let file = process.env.RARGEN_ADDON_PATH || '';
  try {
    const gyp = require('node-gyp-build') as { path(dir: string): string };
    if (!file) file = gyp.path(root);
    // A prebuilt binary is tried in a child process first (a local build was made here).
    if (process.env.RARGEN_NO_PROBE !== '1' && (/[\\/]prebuilds[\\/]/.test(file) || process.env.RARGEN_ADDON_PATH)) {
      const failure = probeAddon(file);
      if (failure) throw new Error(`${file} does not load here: ${failure}`);
    }
    const addon = require(file) as NativeAddon;
    const status = addon.cudaStatus.bind(addon);
    addon.cudaStatus = () => explainCudaStatus(status());
    cached = addon;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new Error(
      `rargen: could not load the native addon (${process.platform}-${process.arch}, Node ${process.version}).\n` +
        `  cause: ${msg}\n` +
        `  Likely fixes:\n` +
        loadFailureHelp(msg) +
        `  - reinstall so the prebuilt binary or a local build is present: npm install rargen --foreground-scripts\n` +
        `  - without a prebuilt binary for this platform, a C++17 compiler and python3 are needed (node-gyp builds the CPU backend)\n` +
        `  - from a git checkout: npm run build:native (cmake-js; builds the CUDA backend too when nvcc is found)`,
    );
  }
  return cached;
}

// ---------------------------------------------------------------------------------
// Training (src/binding_train.cc; wrapped and validated by lib/train/native.ts)

/** Opaque handle to a native trainer (parameters, gradients, AdamW moments, activations). */
export interface NativeTrainer {
  readonly __nativeTrainer: unique symbol;
}

export interface NativeTrainerOptions {
  /** Dropout after attn.proj, after the MLP activation and after fc2. */
  dropout: number;
  /** Dropout on the attention probabilities. */
  attnDropout: number;
}

export interface NativeTrainerInfo {
  /** State-dict names in order, their shapes, and whether AdamW decays them. */
  names: string[];
  shapes: number[][];
  decayed: boolean[];
  numParams: number;
  device: string;
}

export type TrainTensorKind = 'param' | 'grad' | 'exp_avg' | 'exp_avg_sq';

export interface NativeTrainBatch {
  ids: Int32Array; // (B, N) image tokens 0..V-1
  condition: Int32Array; // (B) embedding indices V+1+k or V+K+1
  orders: Int32Array; // (B, N) permutations
  dropoutSeed: [number, number]; // uint32 pair
  /** Gradients are of lossScale * mean CE (1, or 1/accumulation steps). */
  lossScale: number;
  /** Zero the gradients before accumulating this batch's. */
  zeroGrad: boolean;
  /** Return the logits (B, N+1, V) too (tests). */
  returnLogits?: boolean;
  /** Data-parallel, the step's last micro-batch: begin each gradient bucket's all-reduce as soon as backward has made it final (trainAllreduceGrads finishes; src/dist/mpi.h). */
  reduceGrads?: boolean;
}

export interface NativeTrainResult {
  /** Mean cross-entropy over the B*N targets. */
  loss: number;
  /** Targets whose argmax logit is the target. */
  correct: number;
  count: number;
  logits?: Float32Array;
}

export interface NativeOptimizerOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global grad-norm clip; <= 0 or null: no clipping. */
  maxGradNorm: number | null;
  /** AdamW step count including this one (1-based; bias corrections). */
  step: number;
}
