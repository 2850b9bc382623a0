// Shared by the trainer tests (test/train/native.test.ts, on every device) and others
// in test/train: the rar-tiny config, npy conversions, and the relative error.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { native } from '../../lib/native.js';
import type { NpyArray } from '../../lib/io/index.js';
import type { GeneratorConfig } from '../../lib/config.js';
import { generatorConfigFromOfficial } from '../../lib/train/config.js';

export const RAR_TINY = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'fixtures', 'rar-tiny');
export const hasTrainer = typeof (native() as unknown as { createTrainer?: unknown }).createTrainer === 'function';

/** The rar-tiny generator config, from its config.json (official key names). */
export function tinyConfig(): GeneratorConfig {
  const c = JSON.parse(readFileSync(join(RAR_TINY, 'config.json'), 'utf8'));
  return generatorConfigFromOfficial(c, c.codebook_size);
}

export const i32 = (a: NpyArray | undefined) => Int32Array.from(a!.data as ArrayLike<number | bigint>, (x) => Number(x));
export const f32 = (a: NpyArray | undefined) => (a!.data instanceof Float32Array ? a!.data : Float32Array.from(a!.data as ArrayLike<number>));
export const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);

/** max |a - b| / max |b| (the reference tensor's own scale). */
export function relErr(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return m === 0 ? d : d / m;
}
