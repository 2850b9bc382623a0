// Fresh generator weights as the official RAR initialises them (modeling/rar.py):
// Linear weights and embedding tables ~ truncated normal(0, 0.02) (PyTorch's
// trunc_normal_ cuts at +-2 absolute, i.e. +-100 std: effectively a plain normal),
// Linear biases 0, LayerNorm weight 1 and bias 0 (q_norm/k_norm included),
// pos_embed / target_aware_pos_embed / timesteps_embeddings ~ trunc normal(0, 0.02),
// cls_token 0, and adaLN-zero: every adaLN modulation weight and bias 0 (the blocks
// start as the identity). Drawn from a seeded RNG, so a seed gives the same model on
// every machine. Which tensor gets which init, and AdamW's groups, come from the
// parameter table (generatorParamTable, src/model/rar_params.cc).
import { generatorParamTable, type GeneratorConfig } from '../config.js';
import { Rng, deriveSeed } from './rng.js';

/** Standard normal from two uniforms (Box-Muller). */
function normal(rng: Rng): number {
  let u = rng.nextFloat();
  while (u === 0) u = rng.nextFloat();
  const v = rng.nextFloat();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

function truncNormal(out: Float32Array, rng: Rng, std: number, a = -2, b = 2): void {
  for (let i = 0; i < out.length; i++) {
    let x: number;
    do x = normal(rng) * std;
    while (x < a || x > b);
    out[i] = x;
  }
}

/** Every generator tensor, freshly initialised, in state-dict order. */
export function initGeneratorWeights(cfg: GeneratorConfig, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  let k = 0;
  for (const { name, shape, init } of generatorParamTable(cfg)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (init === 'ones') data.fill(1);
    else if (init === 'trunc_normal') truncNormal(data, new Rng(deriveSeed(seed, 0x1417, k)), 0.02);
    out.set(name, { shape, data });
    k++;
  }
  return out;
}
