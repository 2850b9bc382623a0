// Shared by the sampling tests: a random generator with N = 256 tokens that fits the
// vqgan-tiny fixture (64x64 images), its settings, reading an .npz's arr_0, and the
// CLI run in-process with its output captured.
import { join } from 'node:path';
import { vi } from 'vitest';
import { main } from '../../lib/cli.js';
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

/** Runs the rargen CLI in-process; resolves to its exit code and output. */
export async function capture(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((err += String(s)), true));
  try {
    return { code: await main(argv), out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}
