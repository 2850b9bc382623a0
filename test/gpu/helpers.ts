// Helpers for the device-parameterised model suites (test/native/rar.test.ts,
// test/native/vqgan.test.ts, test/train/native.test.ts) and the GPU-only tests: the
// devices to run on (the CPU always, CUDA when usable, and why not), models with
// identical weights on several devices, and error metrics relative to a scale.
import { join } from 'node:path';
import { describe } from 'vitest';
import type { NativeModel, NativeRarConfig, NativeVqConfig } from '../../lib/native.js';
import { openCheckpoint } from '../../lib/io/index.js';
import { MASKGIT_VQGAN, PRESETS, toNativeRarConfig, toNativeVqConfig } from '../../lib/config.js';
import { addon, f32, FIXTURES, npz, rng } from '../native/helpers.js';

export type Dtype = 'f32' | 'f16' | 'bf16';
export interface Target {
  device: 'cpu' | 'cuda';
  dtype: Dtype;
}

/** Undefined when CUDA is usable, else the reason the GPU tests are skipped. */
export function cudaSkipReason(): string | undefined {
  const st = addon.cudaStatus();
  if (!st.built) return st.reason || 'the addon was built without CUDA';
  if (!st.available) return st.reason || 'CUDA is not available';
  return undefined;
}

/**
 * RARGEN_GPU_STANDIN=cpu (bench/gpu.sh --dry-run): the CPU backend stands in for the
 * device under test, and the large shapes shrink, so every step of these tests but the
 * CUDA arithmetic runs on a machine without a GPU. The comparisons are then CPU vs CPU.
 */
export const STANDIN = process.env.RARGEN_GPU_STANDIN === 'cpu';
/** The device under test. */
export const GPU: 'cuda' | 'cpu' = STANDIN ? 'cpu' : 'cuda';
export const skipReason = STANDIN ? undefined : cudaSkipReason();
export const hasCuda = skipReason === undefined;
if (!hasCuda) console.log(`cuda variants and test/gpu: skipped, no usable GPU: ${skipReason}`);
// bench/gpu.sh on the device sets RARGEN_GPU_REQUIRE: there a skip is a failure.
if (!hasCuda && process.env.RARGEN_GPU_REQUIRE) throw new Error(`RARGEN_GPU_REQUIRE is set but CUDA is not usable: ${skipReason}`);
if (STANDIN) console.log('RARGEN_GPU_STANDIN=cpu: the CPU backend stands in for CUDA (small shapes)');
// A capture that falls back to direct calls throws (cuda/backend.cu), so the graph
// path cannot pass untested; RARGEN_CUDA_GRAPHS=0 turns graphs off (the direct path).
if (!STANDIN && process.env.RARGEN_CUDA_GRAPHS === undefined) process.env.RARGEN_CUDA_GRAPHS = 'strict';

/** A device the model suites run on. */
export interface Device {
  /** Its name in test titles ("... on cpu", "... on cuda"). */
  name: 'cpu' | 'cuda';
  /** What the addon is given: 'cuda', or the CPU standing in for it (RARGEN_GPU_STANDIN=cpu). */
  device: 'cpu' | 'cuda';
  /** Why this device's suites are skipped here; undefined: they run. */
  skip?: string;
}
/** The CPU always (the reference the other devices are compared with); CUDA when usable. */
export const DEVICES: readonly Device[] = [
  { name: 'cpu', device: 'cpu' },
  { name: 'cuda', device: GPU, skip: skipReason === undefined ? undefined : `no usable GPU: ${skipReason}` },
];

/**
 * describe.each over DEVICES: `${title} on ${device}`, each device's suite skipped where it
 * cannot run, the reason in its title. `onlyIf(d)` returning a string also skips a device
 * (the string says why; e.g. "the CPU is this comparison's reference").
 */
export function describeDevices(title: string, fn: (d: Device) => void, onlyIf?: (d: Device) => string | undefined): void {
  for (const d of DEVICES) {
    const why = d.skip ?? onlyIf?.(d);
    describe.skipIf(why !== undefined)(`${title} on ${d.name}${why === undefined ? '' : ` (skipped: ${why})`}`, () => fn(d));
  }
}
/** For describeDevices: the comparisons against the CPU run on the other devices only. */
export const notTheReference = (d: Device): string | undefined =>
  d.name === 'cpu' ? 'the CPU is the reference of this comparison' : undefined;

/** Weights as (name, data, shape), produced once and handed to every model. */
export type WeightSource = AsyncIterable<[string, Float32Array, number[]]> | Iterable<[string, Float32Array, number[]]>;

async function loadAll(models: NativeModel[], src: WeightSource): Promise<void> {
  for await (const [name, data, shape] of src) for (const m of models) addon.setWeight(m, name, data, shape);
  for (const m of models) addon.finalize(m);
}

export async function rarModels(cfg: NativeRarConfig, targets: Target[], src: WeightSource): Promise<NativeModel[]> {
  const models = targets.map((t) => addon.createRar(cfg, t.device, t.dtype));
  await loadAll(models, src);
  return models;
}

export async function vqModels(cfg: NativeVqConfig, devices: Array<'cpu' | 'cuda'>, src: WeightSource): Promise<NativeModel[]> {
  const models = devices.map((d) => addon.createVq(cfg, d));
  await loadAll(models, src);
  return models;
}

export async function* checkpointWeights(path: string): AsyncIterable<[string, Float32Array, number[]]> {
  const ckpt = await openCheckpoint(path);
  try {
    for (const [name, info] of ckpt.tensors) yield [name, await ckpt.readFloat32(name), info.shape];
  } finally {
    await ckpt.close();
  }
}

/** rar-tiny: model.bin ('initial') or the parameters after adamw.npz's steps ('trained'). */
export async function* rarTinyWeights(which: 'initial' | 'trained'): AsyncIterable<[string, Float32Array, number[]]> {
  if (which === 'initial') {
    yield* checkpointWeights(join(FIXTURES, 'rar-tiny', 'model.bin'));
    return;
  }
  const a = await npz('rar-tiny/adamw.npz');
  for (const [key, arr] of a) if (key.startsWith('param.')) yield [key.slice(6), f32(arr), arr.shape];
}

/** Random generator weights with the official state-dict names (lib/testing/weights.ts). */
export { randomGeneratorWeights as randomRarWeights } from '../../lib/testing/weights.js';
/** Random MaskGIT-VQGAN weights for a config (lib/testing/weights.ts). */
export { randomTokenizerWeights as randomVqWeights } from '../../lib/testing/weights.js';

/** max |a - b| / max(1, max |b|): absolute for O(1) values, relative for large ones. */
export function scaledMaxDiff(a: ArrayLike<number>, b: ArrayLike<number>): { err: number; scale: number } {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return { err: m / Math.max(1, s), scale: s };
}

export function randomIds(n: number, V: number, seed: number): Int32Array {
  const r = rng(seed);
  return new Int32Array(n).map(() => Math.floor(r() * V));
}

export const RAR_B: NativeRarConfig = toNativeRarConfig(PRESETS['rar-b'].generator);

/** RAR-B, or under the stand-in a 2-block C=96 model with the same sequence and vocabulary. */
export const RAR_B_UNDER_TEST: NativeRarConfig = STANDIN ? { ...RAR_B, hiddenSize: 96, depth: 2, numHeads: 2, mlpDim: 192 } : RAR_B;

export const MASKGIT_VQ: NativeVqConfig = toNativeVqConfig(MASKGIT_VQGAN);

/** MaskGIT's decoder, or under the stand-in the same layout with 32 base channels. */
export const MASKGIT_VQ_UNDER_TEST: NativeVqConfig = STANDIN ? { ...MASKGIT_VQ, hiddenChannels: 32 } : MASKGIT_VQ;

/** The guidance scale at step t (src/model/rar.cc cfg_scale_at, float32 like it). */
export function cfgScaleAt(t: number, N: number, g: number, p: number): number {
  const ratio = Math.fround(t / N);
  const step = Math.fround(Math.fround(1 - Math.fround(Math.cos(Math.fround(Math.fround(Math.pow(ratio, p)) * Math.fround(Math.PI))))) * 0.5);
  return Math.fround(Math.fround(g - 1) * step + 1);
}

export interface GreedyAgreement {
  positions: number;
  /** Positions whose reference top-1 margin is within 2x the measured logit error. */
  nearTies: number;
  /** Decisive positions (margin > 2x error) where the device's argmax differs: must be 0. */
  mismatches: number;
  /** max |device - reference| of the CFG-combined logits, teacher-forced on the reference tokens. */
  maxErr: number;
  /** Smallest reference margin seen (top-1 minus top-2). */
  minMargin: number;
  /** Free-running device tokens equal to the reference's up to each image's first near-tie. */
  prefixAgrees: boolean;
  summary: string;
}

/**
 * Greedy CFG generation on `dut` against `ref`, immune to near-ties: both models are
 * teacher-forced on the reference's tokens (rarDecodeSteps over [tokens; tokens] with the
 * class and null conditions), the CFG-combined logits compared step by step. Where the
 * reference's top-1 margin exceeds twice the measured logit error no rounding can move
 * the argmax, so the device must pick the reference token there; near-ties are counted
 * and skipped. The device's own free-running generation must match up to the first
 * near-tie of each image (after one, a differing token is legitimate and conditions the
 * rest differently).
 */
export async function greedyAgreement(
  ref: NativeModel,
  dut: NativeModel,
  cfg: NativeRarConfig,
  classIds: number[],
  g: number,
  p: number,
  errFloor = 0,
): Promise<GreedyAgreement> {
  const B = classIds.length, N = cfg.seqLen, V = cfg.codebookSize;
  const opts = {
    classIds: Int32Array.from(classIds), guidanceScale: g, guidanceScalePow: p, temperature: 1, topK: 0, topP: 1,
    greedy: true, seed: '0', indexOffset: 0,
  };
  const tokens = await addon.rarGenerate(ref, opts);
  const ids2 = new Int32Array(2 * B * N);
  ids2.set(tokens, 0);
  ids2.set(tokens, B * N);
  const cond2 = Int32Array.from([...classIds.map((k) => V + 1 + k), ...classIds.map(() => V + cfg.numClasses + 1)]);
  const lr = await addon.rarDecodeSteps(ref, ids2, cond2);
  const ld = await addon.rarDecodeSteps(dut, ids2, cond2);
  const comb = (l: Float32Array, b: number, t: number, v: number, s: number) => {
    const c = l[(b * N + t) * V + v], u = l[((B + b) * N + t) * V + v];
    return u + (c - u) * s;
  };
  let maxErr = errFloor, scale = 1;
  for (let i = 0; i < lr.length; i++) scale = Math.max(scale, Math.abs(lr[i]!));
  // floor: float32 rounding of the combine itself (u + (c - u) * s), here vs in the sampler
  maxErr = Math.max(maxErr, 1e-5 * scale * Math.max(1, g));
  const margins = new Float64Array(B * N), argD = new Int32Array(B * N);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < N; t++) {
      const s = cfgScaleAt(t, N, g, p);
      let best = -Infinity, second = -Infinity, bestD = -Infinity, iD = 0;
      for (let v = 0; v < V; v++) {
        const r = comb(lr, b, t, v, s), d = comb(ld, b, t, v, s);
        maxErr = Math.max(maxErr, Math.abs(r - d));
        if (r > best) [second, best] = [best, r];
        else if (r > second) second = r;
        if (d > bestD) [bestD, iD] = [d, v];
      }
      margins[b * N + t] = best - second;
      argD[b * N + t] = iD;
    }
  let nearTies = 0, mismatches = 0, minMargin = Infinity;
  const firstTie = new Array<number>(B).fill(N);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < N; t++) {
      const m = margins[b * N + t];
      minMargin = Math.min(minMargin, m);
      if (m <= 2 * maxErr) {
        nearTies++;
        firstTie[b] = Math.min(firstTie[b]!, t);
      } else if (argD[b * N + t] !== tokens[b * N + t]) mismatches++;
    }
  const free = await addon.rarGenerate(dut, opts);
  let prefixAgrees = true;
  for (let b = 0; b < B; b++)
    for (let t = 0; t < firstTie[b]!; t++) if (free[b * N + t] !== tokens[b * N + t]) prefixAgrees = false;
  const summary = `${B}x${N} greedy positions: ${nearTies} near-ties (margin <= 2 x logit err ${maxErr.toExponential(3)}), ` +
    `${mismatches} decisive mismatches, min margin ${minMargin.toExponential(3)}, free-running prefix ${prefixAgrees ? 'identical' : 'DIFFERS'}`;
  return { positions: B * N, nearTies, mismatches, maxErr, minMargin, prefixAgrees, summary };
}

/**
 * Encoder tokens immune to near-ties: the nearest codebook row (squared distance) of
 * every latent position, from the reference's and the device's latents (B, Cz, HW).
 * Where the reference's best-vs-second distance margin exceeds twice the measured
 * distance error, the tokens must agree; closer calls are counted as near-ties.
 */
export function codebookAgreement(
  ref: { latents: Float32Array; tokens: Int32Array },
  dut: { latents: Float32Array; tokens: Int32Array },
  codebook: Float32Array,
  B: number,
  Cz: number,
): { positions: number; nearTies: number; mismatches: number; summary: string } {
  const K = codebook.length / Cz, HW = ref.latents.length / (B * Cz);
  const dist = (z: Float32Array, b: number, p: number, k: number) => {
    let d = 0;
    for (let c = 0; c < Cz; c++) {
      const e = z[(b * Cz + c) * HW + p]! - codebook[k * Cz + c]!;
      d += e * e;
    }
    return d;
  };
  const margin = new Float64Array(B * HW);
  let err = 0, scale = 1;
  for (let b = 0; b < B; b++)
    for (let p = 0; p < HW; p++) {
      let best = Infinity, second = Infinity;
      for (let k = 0; k < K; k++) {
        const r = dist(ref.latents, b, p, k), d = dist(dut.latents, b, p, k);
        err = Math.max(err, Math.abs(r - d));
        scale = Math.max(scale, r);
        if (r < best) [second, best] = [best, r];
        else if (r < second) second = r;
      }
      margin[b * HW + p] = second - best;
    }
  err = Math.max(err, 1e-6 * scale); // float32 distance rounding in the op itself
  let nearTies = 0, mismatches = 0;
  for (let q = 0; q < B * HW; q++) {
    if (margin[q]! <= 2 * err) nearTies++;
    else if (dut.tokens[q] !== ref.tokens[q]) mismatches++;
  }
  const summary = `${B * HW} encoder positions: ${nearTies} near-ties (distance margin <= 2 x err ${err.toExponential(3)}), ${mismatches} decisive mismatches`;
  return { positions: B * HW, nearTies, mismatches, summary };
}
