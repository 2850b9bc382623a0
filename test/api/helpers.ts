// Shared by the end-to-end tests (test/api and test/cli): checkpoints made on the fly.
import { join } from 'node:path';
import { readNpz, saveTorch } from '../../lib/io/index.js';
import { numelOf, type HostTensor } from '../../lib/tensor.js';
import { expectedGeneratorTensors, positionRows, type GeneratorConfig } from '../../lib/config.js';
import { native } from '../../lib/native.js';
import { createImage, type RgbImage } from '../../lib/image.js';

export const FIX = join(import.meta.dirname, '..', 'fixtures');

/** True when the native addon loads and has the model functions. */
export function hasModelAddon(): boolean {
  try {
    return typeof native().createRar === 'function' && typeof native().rarGenerate === 'function';
  } catch {
    return false;
  }
}

/** Writes a torch checkpoint of the generator weights after adamw.npz's three steps (what decode.npz used). */
export async function postAdamwCheckpoint(file: string): Promise<void> {
  const npz = await readNpz(join(FIX, 'rar-tiny', 'adamw.npz'));
  const tensors = new Map<string, HostTensor>();
  for (const [k, a] of npz) if (k.startsWith('param.')) tensors.set(k.slice(6), { dtype: 'float32', shape: a.shape, data: a.data as Float32Array });
  await saveTorch(file, tensors);
}

/** A random generator whose tokens fit vqgan-tiny (N = 256, V = 64). */
export async function randomGeneratorFor16x16(file: string): Promise<void> {
  const cfg: GeneratorConfig = { hiddenSize: 32, depth: 1, numHeads: 2, headDim: 16, mlpDim: 64, seqLen: 256, codebookSize: 64, numClasses: 10, ...positionRows(256) };
  let s = 12345;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const tensors = new Map<string, HostTensor>();
  for (const [name, shape] of expectedGeneratorTensors(cfg)) {
    const data = new Float32Array(numelOf(shape));
    const isNormWeight = /norm\d?\.weight$|q_norm\.weight$|k_norm\.weight$/.test(name);
    for (let i = 0; i < data.length; i++) data[i] = (isNormWeight ? 1 : 0) + rand() * 0.2;
    tensors.set(name, { dtype: 'float32', shape, data });
  }
  await saveTorch(file, tensors);
}

/** The input pattern of test/api/fixtures/image/make_image_fixtures.py (image and ten-crop tests). */
export function pattern(w: number, h: number): RgbImage {
  const img = createImage(w, h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++) {
        const n = (x * 73856093) ^ (y * 19349663) ^ (c * 83492791);
        const ramp = (Math.floor((x * 255) / Math.max(1, w - 1)) + Math.floor((y * 255) / Math.max(1, h - 1)) + c * 85) % 256;
        img.data[(y * w + x) * 3 + c] = ((n & 255) + ramp) >> 1;
      }
  return img;
}
