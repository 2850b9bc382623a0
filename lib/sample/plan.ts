// Sampling runs, part 1 of lib/sample (the overview is in lib/sample.ts): the settings
// that identify a run, where its files are, which image indices a shard takes, and how
// the missing images are cut into batches. Pure functions, no I/O.
import { resolve, join } from 'node:path';
import type { Precision } from '../validate.js';
import { ValidationError } from '../errors.js';

/** What makes two runs the same run (OUT/run.json). Images depend on all of it. */
export interface SampleSettings {
  generator: { file: string; bytes: number; preset: string | null; seqLen: number; numClasses: number; codebookSize: number; hiddenSize: number; depth: number };
  tokenizer: { file: string; bytes: number; resolution: number };
  /** Weight storage on the backend (f16/bf16 change the images). */
  precision: Precision;
  /** Class of each block of numPerClass images, in order. */
  classes: number[];
  numPerClass: number;
  numImages: number;
  seed: string;
  guidanceScale: number;
  guidanceScalePow: number;
  temperature: number;
  topK: number;
  topP: number;
}

/** Where a run's files are. */
export interface SampleLayout {
  dir: string;
  images: string;
  progress: string;
  runFile: string;
  npz: string;
}

/** The files of the run in `out`; the .npz defaults to `out` + '.npz' beside the folder. */
export function sampleLayout(out: string, npz?: string): SampleLayout {
  const dir = resolve(out);
  return { dir, images: join(dir, 'images'), progress: join(dir, 'progress'), runFile: join(dir, 'run.json'), npz: resolve(npz ?? dir + '.npz') };
}

/** The PNG name of image g: 000000.png, 000001.png, ... */
export function sampleImageName(g: number): string {
  return String(g).padStart(6, '0') + '.png';
}
export const IMAGE_NAME = /^(\d{6,})\.png$/;

export interface Shard {
  index: number;
  count: number;
}

/** Parses "i/n" (0 <= i < n). */
export function parseShard(text: string, flag = '--shard'): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) throw new ValidationError(`${flag} expects i/n, e.g. 0/2 for the first of two shards, but received ${JSON.stringify(text)}`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (!Number.isSafeInteger(count) || count < 1) throw new ValidationError(`${flag} expects i/n with n >= 1 but received ${JSON.stringify(text)}`);
  if (index >= count) throw new ValidationError(`${flag} expects i/n with 0 <= i < n but received ${JSON.stringify(text)} (the shards of ${count} are 0/${count} to ${count - 1}/${count})`);
  return { index, count };
}

/** Image indices [start, end) of a shard: contiguous blocks, sizes differing by at most one. */
export function shardRange(total: number, shard: Shard): [number, number] {
  return [Math.floor((total * shard.index) / shard.count), Math.floor((total * (shard.index + 1)) / shard.count)];
}

/** The class of image g. */
export function sampleLabel(settings: Pick<SampleSettings, 'classes' | 'numPerClass'>, g: number): number {
  return settings.classes[Math.floor(g / settings.numPerClass)]!;
}

/**
 * Contiguous runs of the sorted `missing` indices, cut at multiples of batchSize (so
 * a resumed run batches like an uninterrupted one wherever it can).
 */
export function planBatches(missing: readonly number[], batchSize: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < missing.length; ) {
    const a = missing[i]!;
    const cellEnd = (Math.floor(a / batchSize) + 1) * batchSize;
    let b = a + 1;
    i++;
    while (i < missing.length && missing[i] === b && b < cellEnd) {
      b++;
      i++;
    }
    out.push([a, b]);
  }
  return out;
}

export const shardName = (s: Shard) => `shard-${s.index}-of-${s.count}`;
