// Helpers for the GPU tests: whether CUDA can be used here (and why not), models with
// identical weights on several devices, and error metrics relative to a scale.
import { join } from 'node:path';
import type { NativeModel, NativeRarConfig, NativeVqConfig } from '../../lib/native.js';
import { openCheckpoint } from '../../lib/io/index.js';
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

export const skipReason = cudaSkipReason();
export const hasCuda = skipReason === undefined;
if (!hasCuda) console.log(`test/gpu: skipped, no usable GPU: ${skipReason}`);

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

/** Random generator weights with the official state-dict names (as test/native/kvcache.test.ts). */
export function* randomRarWeights(cfg: NativeRarConfig, seed: number): Iterable<[string, Float32Array, number[]]> {
  const r = rng(seed);
  const C = cfg.hiddenSize, I = cfg.mlpDim, D = C / cfg.numHeads, V = cfg.codebookSize, K = cfg.numClasses;
  const t = (name: string, shape: number[], scale: number, offset = 0): [string, Float32Array, number[]] => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = offset + scale * (2 * r() - 1);
    return [name, data, shape];
  };
  yield t('cls_token', [1, 1, C], 0.5);
  yield t('pos_embed', [1, cfg.posEmbedRows, C], 0.5);
  yield t('target_aware_pos_embed', [1, cfg.posEmbedRows, C], 0.5);
  yield t('timesteps_embeddings', [1, cfg.timestepRows, C], 0.5);
  yield t('embeddings.weight', [V + 1 + K + 1, C], 1);
  for (let i = 0; i < cfg.depth; i++) {
    const p = `blocks.${i}.`;
    yield t(p + 'norm1.weight', [C], 0.2, 1);
    yield t(p + 'norm1.bias', [C], 0.1);
    yield t(p + 'attn.qkv.weight', [3 * C, C], 1 / Math.sqrt(C));
    yield t(p + 'attn.qkv.bias', [3 * C], 0.1);
    for (const n of ['q_norm', 'k_norm']) {
      yield t(p + `attn.${n}.weight`, [D], 0.5, 1.5);
      yield t(p + `attn.${n}.bias`, [D], 0.2);
    }
    yield t(p + 'attn.proj.weight', [C, C], 1 / Math.sqrt(C));
    yield t(p + 'attn.proj.bias', [C], 0.1);
    yield t(p + 'norm2.weight', [C], 0.2, 1);
    yield t(p + 'norm2.bias', [C], 0.1);
    yield t(p + 'mlp.fc1.weight', [I, C], 1 / Math.sqrt(C));
    yield t(p + 'mlp.fc1.bias', [I], 0.1);
    yield t(p + 'mlp.fc2.weight', [C, I], 1 / Math.sqrt(I));
    yield t(p + 'mlp.fc2.bias', [C], 0.1);
    // small gates keep 24+ random blocks from blowing the residual stream up
    yield t(p + 'adaLN_modulation.1.weight', [6 * C, C], 0.5 / Math.sqrt(C));
    yield t(p + 'adaLN_modulation.1.bias', [6 * C], 0.1);
  }
  yield t('adaln_before_head.adaLN_modulation.1.weight', [2 * C, C], 1 / Math.sqrt(C));
  yield t('adaln_before_head.adaLN_modulation.1.bias', [2 * C], 0.2);
  yield t('lm_head.weight', [V, C], 1 / Math.sqrt(C));
  yield t('lm_head.bias', [V], 0.1);
}

/** Random MaskGIT-VQGAN weights for a config (He-scaled convs, GroupNorm near identity). */
export function* randomVqWeights(cfg: NativeVqConfig, seed: number): Iterable<[string, Float32Array, number[]]> {
  const r = rng(seed);
  const t = (name: string, shape: number[], scale: number, offset = 0): [string, Float32Array, number[]] => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = offset + scale * (2 * r() - 1);
    return [name, data, shape];
  };
  const conv = (name: string, co: number, ci: number, k: number, bias: boolean) => {
    const out: Array<[string, Float32Array, number[]]> = [t(name + '.weight', [co, ci, k, k], Math.sqrt(3 / (ci * k * k)))];
    if (bias) out.push(t(name + '.bias', [co], 0.05));
    return out;
  };
  const norm = (name: string, c: number) => [t(name + '.weight', [c], 0.2, 1), t(name + '.bias', [c], 0.1)];
  const block = (p: string, cin: number, cout: number) => [
    ...norm(p + '.norm1', cin),
    ...conv(p + '.conv1', cout, cin, 3, false),
    ...norm(p + '.norm2', cout),
    ...conv(p + '.conv2', cout, cout, 3, false),
    ...(cin !== cout ? conv(p + '.nin_shortcut', cout, cout, 1, false) : []),
  ];
  const L = cfg.channelMult.length, h = cfg.hiddenChannels, top = h * cfg.channelMult[L - 1];
  yield* conv('encoder.conv_in', h, 3, 3, false);
  let cin = h;
  for (let i = 0; i < L; i++)
    for (let j = 0; j < cfg.numResBlocks; j++) {
      yield* block(`encoder.down.${i}.block.${j}`, cin, h * cfg.channelMult[i]);
      cin = h * cfg.channelMult[i];
    }
  for (let j = 0; j < 2; j++) yield* block(`encoder.mid.${j}`, top, top);
  yield* norm('encoder.norm_out', top);
  yield* conv('encoder.conv_out', cfg.zChannels, top, 1, true);
  yield* conv('decoder.conv_in', top, cfg.zChannels, 3, true);
  for (let j = 0; j < 2; j++) yield* block(`decoder.mid.${j}`, top, top);
  cin = top;
  for (let i = L - 1; i >= 0; i--) {
    const cout = h * cfg.channelMult[i];
    for (let j = 0; j < cfg.numResBlocks; j++) {
      yield* block(`decoder.up.${i}.block.${j}`, cin, cout);
      cin = cout;
    }
    if (i !== 0) yield* conv(`decoder.up.${i}.upsample_conv`, cout, cout, 3, true);
  }
  yield* norm('decoder.norm_out', cin);
  yield* conv('decoder.conv_out', 3, cin, 3, true);
  yield t('quantize.embedding.weight', [cfg.codebookSize, cfg.zChannels], 1);
}

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

export const RAR_B: NativeRarConfig = {
  hiddenSize: 768,
  depth: 24,
  numHeads: 16,
  mlpDim: 3072,
  seqLen: 256,
  codebookSize: 1024,
  numClasses: 1000,
  posEmbedRows: 256 + 1024,
  timestepRows: 256 + 100,
};

export const MASKGIT_VQ: NativeVqConfig = {
  hiddenChannels: 128,
  channelMult: [1, 1, 2, 2, 4],
  numResBlocks: 2,
  zChannels: 256,
  codebookSize: 1024,
  resolution: 256,
};
