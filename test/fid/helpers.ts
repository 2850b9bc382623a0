// Shared by the FID tests: the fixture's formula weights (test/fixtures/README.md,
// inception/), written as a torch file with lib/io's saveTorch and then loaded through
// the normal path; and the fixture arrays.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readNpz, saveTorch, type NpyArray } from '../../lib/io/index.js';
import type { HostTensor } from '../../lib/tensor.js';
import { inceptionParamTable } from '../../lib/config.js';
import { native } from '../../lib/native.js';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'inception');

/** Fails with the fix when the addon lacks the evaluator functions. */
export function requireEvalBinding(): void {
  if (typeof (native() as unknown as Record<string, unknown>).inceptionCreate !== 'function')
    throw new Error("the native addon has no evaluator functions: src/binding.cc's Init must call rargen::register_eval(env, exports) (src/binding_eval.cc), then rebuild");
}

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
 * Writes a torch file with the formula weights for every key of inception_shapes.json
 * (from the addon's own table, checked against the JSON by a test), plus the
 * num_batches_tracked entries the real file has, into `dir` (a test file's tempDir).
 */
export async function formulaWeightsFile(dir: string): Promise<string> {
  const shapes = inceptionParamTable();
  const keys = shapes.map((s) => s.name).sort();
  const byName = new Map(shapes.map((s) => [s.name, s.shape]));
  const tensors = new Map<string, HostTensor>();
  keys.forEach((key, k) => {
    const shape = byName.get(key)!;
    tensors.set(key, { dtype: 'float32', shape, data: formulaTensor(key, k, shape) });
    if (key.endsWith('.bn.running_var')) tensors.set(key.replace(/running_var$/, 'num_batches_tracked'), { dtype: 'int64', shape: [], data: new BigInt64Array(1) });
  });
  const path = join(dir, 'pt_inception-formula.pth');
  await saveTorch(path, tensors);
  if (!existsSync(path)) throw new Error('saveTorch wrote nothing');
  return path;
}

let inceptionNpz: Promise<Map<string, NpyArray>> | undefined;
export function inceptionFixture(): Promise<Map<string, NpyArray>> {
  inceptionNpz ??= readNpz(join(FIXTURES, 'inception.npz'));
  return inceptionNpz;
}

let metricsNpz: Promise<Map<string, NpyArray>> | undefined;
export function metricsFixture(): Promise<Map<string, NpyArray>> {
  metricsNpz ??= readNpz(join(FIXTURES, 'metrics.npz'));
  return metricsNpz;
}

/** max |a - b| / max |b| */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}
