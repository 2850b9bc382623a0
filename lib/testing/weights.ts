// Random weights for tests and benchmarks, derived from the parameter tables
// (generatorParamTable / tokenizerParamTable: src/model/rar_params.cc,
// vqgan_params.cc), so no test or bench writes a state dict out again. Values are
// uniform, scaled by each tensor's kind so that any depth keeps finite, non-trivial
// activations: GEMM weights +-1/sqrt(fan_in) (+-0.5/sqrt for the adaLN-zero
// modulation layers: small gates keep 24+ random blocks from blowing the residual
// stream up), convolutions +-sqrt(3/fan_in) (He: a GroupNorm precedes each), biases
// +-0.1, norm scales 1 +- 0.2, norm shifts +-0.1, tables, tokens and codebooks
// +-0.5. Deterministic for a seed (mulberry32), one stream
// over the table in state-dict order; produced one tensor at a time.
import { generatorParamTable, tokenizerParamTable, type ParamSpec } from '../config.js';
import type { NativeRarConfig, NativeVqConfig } from '../native.js';

/** A state-dict tensor as (name, float32 data, shape). */
export type NamedTensor = [name: string, data: Float32Array, shape: number[]];

/** mulberry32: uniform in [0, 1). */
export function uniformStream(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The (offset, half-width) of a tensor's uniform values, from its kind. */
export function randomRange(p: ParamSpec): { offset: number; scale: number } {
  switch (p.kind) {
    case 'linear': {
      const fanIn = p.shape.slice(1).reduce((a, b) => a * b, 1);
      return { offset: 0, scale: (p.init === 'zeros' ? 0.5 : 1) / Math.sqrt(fanIn) };
    }
    case 'conv': {
      const fanIn = p.shape.slice(1).reduce((a, b) => a * b, 1);
      return { offset: 0, scale: Math.sqrt(3 / fanIn) };
    }
    case 'bias':
      return { offset: 0, scale: 0.1 };
    case 'norm_weight':
      return { offset: 1, scale: 0.2 };
    case 'norm_bias':
      return { offset: 0, scale: 0.1 };
    case 'norm_stat': // BatchNorm running mean (init zeros) / variance (init ones, kept positive)
      return { offset: p.init === 'ones' ? 1 : 0, scale: 0.2 };
    case 'embedding':
      return { offset: 0, scale: 0.5 };
  }
}

/** Random values for every tensor of a table, in its order. */
export function* randomWeights(table: Iterable<ParamSpec>, seed: number): Generator<NamedTensor> {
  const r = uniformStream(seed);
  for (const p of table) {
    const { offset, scale } = randomRange(p);
    const data = new Float32Array(p.shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = offset + scale * (2 * r() - 1);
    yield [p.name, data, p.shape];
  }
}

/** Random RAR generator weights for a config (every key of its state dict). */
export function randomGeneratorWeights(cfg: NativeRarConfig, seed: number): Generator<NamedTensor> {
  return randomWeights(generatorParamTable(cfg), seed);
}

/** Random MaskGIT-VQGAN weights for a config (encoder, decoder and codebook). */
export function randomTokenizerWeights(cfg: NativeVqConfig, seed: number): Generator<NamedTensor> {
  return randomWeights(tokenizerParamTable(cfg), seed);
}
