// The formula weights of the FID fixtures (test/fixtures/README.md, inception/): every
// Inception tensor of the addon's table from a hash of its position, so a test or a bench
// gets a full, deterministic pt_inception file without downloading the real one. The
// fixture generator computes the same formula in numpy.
import { inceptionParamTable } from '../config.js';
import { saveTorch } from '../io/index.js';
import type { HostTensor } from '../tensor.js';

/** lowbias32 (Chris Wellons' 32-bit integer hash). */
export function lowbias32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  return x;
}

/** The fixture weights of one key (index k in the sorted key list), float64 math rounded to float32. */
export function formulaTensor(key: string, k: number, shape: number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const base = Math.imul(k, 0x9e3779b9);
  let f: (u: number) => number;
  if (key.endsWith('conv.weight')) {
    const s = Math.sqrt(6 / (shape[1]! * shape[2]! * shape[3]!));
    f = (u) => (2 * u - 1) * s;
  } else if (key.endsWith('bn.weight')) f = (u) => 1 + 0.2 * (u - 0.5);
  else if (key.endsWith('bn.bias') || key.endsWith('bn.running_mean')) f = (u) => 0.02 * (u - 0.5);
  else if (key.endsWith('bn.running_var')) f = (u) => 1 + 0.5 * u;
  else if (key === 'fc.weight') {
    const s = Math.sqrt(3 / 2048) * 30;
    f = (u) => (2 * u - 1) * s;
  } else if (key === 'fc.bias') f = (u) => (2 * u - 1) * 0.01;
  else throw new Error(`no formula for ${key}`);
  for (let i = 0; i < n; i++) out[i] = f(lowbias32((i + base) >>> 0) / 4294967296);
  return out;
}

/**
 * Writes a torch file with the formula weights for every key of the addon's Inception
 * table, plus the num_batches_tracked entries the real file has.
 */
export async function writeFormulaInceptionWeights(path: string): Promise<void> {
  const shapes = inceptionParamTable();
  const keys = shapes.map((s) => s.name).sort();
  const byName = new Map(shapes.map((s) => [s.name, s.shape]));
  const tensors = new Map<string, HostTensor>();
  keys.forEach((key, k) => {
    const shape = byName.get(key)!;
    tensors.set(key, { dtype: 'float32', shape, data: formulaTensor(key, k, shape) });
    if (key.endsWith('.bn.running_var')) tensors.set(key.replace(/running_var$/, 'num_batches_tracked'), { dtype: 'int64', shape: [], data: new BigInt64Array(1) });
  });
  await saveTorch(path, tensors);
}
