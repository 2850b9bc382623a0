// Shared by the sampling tests: a random generator with N = 256 tokens that fits the
// vqgan-tiny fixture (64x64 images), its settings, and reading an .npz's arr_0.
import { join } from 'node:path';
import { readNpz } from '../../lib/io/index.js';
import { randomGeneratorFor16x16 } from '../api/helpers.js';

export { hasModelAddon } from '../api/helpers.js';
export const FIX = join(import.meta.dirname, '..', 'fixtures');
export const TOKENIZER = join(FIX, 'vqgan-tiny', 'model.bin');
/** The tiny generator has 10 classes; guidance as a preset would set it. */
export const SAMPLING = { guidanceScale: 2, guidanceScalePow: 1, temperature: 1.05 };

/** Writes the random N = 256 generator to `file`. */
export function writeTinyGenerator(file: string): Promise<void> {
  return randomGeneratorFor16x16(file);
}

/** arr_0 and labels of an .npz. */
export async function readSamples(path: string): Promise<{ shape: number[]; pixels: Buffer; labels: number[] }> {
  const z = await readNpz(path);
  const a = z.get('arr_0')!;
  const l = z.get('labels')!;
  const px = a.data as Uint8Array;
  return { shape: a.shape, pixels: Buffer.from(px.buffer, px.byteOffset, px.byteLength), labels: Array.from(l.data as BigInt64Array, Number) };
}
