// Shared helpers for the native tests: fixture paths, model loading through lib/io,
// array conversions and error metrics.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native, type NativeModel, type NativeRarConfig, type NativeVqConfig } from '../../lib/native.js';
import { toNativeRarConfig } from '../../lib/config.js';
import { generatorConfigFromOfficial } from '../../lib/train/config.js';
import { openCheckpoint, readNpz, type NpyArray } from '../../lib/io/index.js';

export const FIXTURES = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'fixtures');
export const addon = native();

export function readJson(path: string): any {
  return JSON.parse(readFileSync(path, 'utf8'));
}

export async function npz(path: string): Promise<Map<string, NpyArray>> {
  return readNpz(join(FIXTURES, path));
}

export function i32(a: NpyArray | undefined): Int32Array {
  if (!a) throw new Error('missing array');
  const d = a.data as ArrayLike<number | bigint>;
  const out = new Int32Array(d.length);
  for (let i = 0; i < d.length; i++) out[i] = Number(d[i]);
  return out;
}

export function f32(a: NpyArray | undefined): Float32Array {
  if (!a) throw new Error('missing array');
  if (a.data instanceof Float32Array) return a.data;
  return Float32Array.from(a.data as ArrayLike<number>);
}

export function scalar(a: NpyArray | undefined): number {
  return Number((a!.data as ArrayLike<number | bigint>)[0]);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function rarTinyConfig(): NativeRarConfig {
  const c = readJson(join(FIXTURES, 'rar-tiny', 'config.json'));
  return toNativeRarConfig(generatorConfigFromOfficial(c, c.codebook_size));
}

export function vqTinyConfig(): NativeVqConfig {
  const c = readJson(join(FIXTURES, 'vqgan-tiny', 'config.json'));
  return {
    hiddenChannels: c.hidden_channels,
    channelMult: c.channel_mult,
    numResBlocks: c.num_res_blocks,
    zChannels: c.z_channels,
    codebookSize: c.codebook_size,
    resolution: c.resolution,
  };
}

/** Loads every tensor of a checkpoint into a native model and finalizes it. */
export async function loadWeights(model: NativeModel, path: string): Promise<void> {
  const ckpt = await openCheckpoint(path);
  try {
    for (const [name, info] of ckpt.tensors) {
      addon.setWeight(model, name, await ckpt.readFloat32(name), info.shape);
    }
  } finally {
    await ckpt.close();
  }
  addon.finalize(model);
}

/**
 * rar-tiny with the weights of model.bin ('initial': what forward.npz was computed
 * with) or with the parameters after the three AdamW steps of adamw.npz ('trained':
 * what decode.npz was computed with -- checked: its step/full logits match those
 * parameters to 4e-7 and are 0.59 away from model.bin's).
 */
export async function loadRarTiny(
  dtype: 'f32' | 'f16' | 'bf16' = 'f32',
  weights: 'initial' | 'trained' = 'initial',
): Promise<NativeModel> {
  const m = addon.createRar(rarTinyConfig(), 'cpu', dtype);
  if (weights === 'initial') {
    await loadWeights(m, join(FIXTURES, 'rar-tiny', 'model.bin'));
    return m;
  }
  const a = await npz('rar-tiny/adamw.npz');
  for (const [key, arr] of a) {
    if (!key.startsWith('param.')) continue;
    addon.setWeight(m, key.slice(6), f32(arr), arr.shape);
  }
  addon.finalize(m);
  return m;
}

export async function loadVqTiny(): Promise<NativeModel> {
  const m = addon.createVq(vqTinyConfig(), 'cpu');
  await loadWeights(m, join(FIXTURES, 'vqgan-tiny', 'model.bin'));
  return m;
}

/** Deterministic pseudo-random numbers (mulberry32, lib/testing/weights.ts). */
export { uniformStream as rng } from '../../lib/testing/weights.js';
