// Shared by the FID tests: the fixture's formula weights (test/fixtures/README.md,
// inception/), written as a torch file with lib/io's saveTorch and then loaded through
// the normal path; and the fixture arrays.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readNpz, type NpyArray } from '../../lib/io/index.js';
import { writeFormulaInceptionWeights } from '../../lib/testing/inception-weights.js';
import { native } from '../../lib/native.js';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'inception');

/** Fails with the fix when the addon lacks the evaluator functions. */
export function requireEvalBinding(): void {
  if (typeof (native() as unknown as Record<string, unknown>).inceptionCreate !== 'function')
    throw new Error("the native addon has no evaluator functions: src/binding.cc's Init must call rargen::register_eval(env, exports) (src/binding_eval.cc), then rebuild");
}

export { formulaTensor, lowbias32 } from '../../lib/testing/inception-weights.js';

/** Deterministic uint8 images (n, h, w, 3): smooth gradients plus hashed noise. */
export function testImages(n: number, h: number, w: number, seed: number): Uint8Array {
  const out = new Uint8Array(n * h * w * 3);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    const px = Math.floor(i / 3) % (h * w);
    out[i] = (((px % w) * 255) / w + (s & 63)) & 255;
  }
  return out;
}

/**
 * Writes a torch file with the formula weights for every key of inception_shapes.json
 * (from the addon's own table, checked against the JSON by a test), plus the
 * num_batches_tracked entries the real file has, into `dir` (a test file's tempDir).
 */
export async function formulaWeightsFile(dir: string): Promise<string> {
  const path = join(dir, 'pt_inception-formula.pth');
  await writeFormulaInceptionWeights(path);
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
