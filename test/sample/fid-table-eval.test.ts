// rargen fid-table with the real evaluator (lib/fid.ts evaluateNpz) on tiny batches and
// the fixture's formula Inception weights: a present sample file is measured, flagged
// as not comparable (5 samples, not 50,000), and the rerun answers from the cache
// without loading Inception. Skipped when the addon lacks the evaluator functions.
import { describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeNpz, type NpyArray } from '../../lib/io/index.js';
import { native } from '../../lib/native.js';
import { tempDir } from '../helpers/tmp.js';
import { formulaWeightsFile } from '../fid/helpers.js';
import { capture } from './helpers.js';

const tmp = tempDir('fid-table');

const hasEval = (() => {
  try {
    return typeof (native() as unknown as Record<string, unknown>).inceptionCreate === 'function';
  } catch {
    return false;
  }
})();

/** n random 32x32 images. */
function images(n: number, seed: number): NpyArray {
  const d = new Uint8Array(n * 32 * 32 * 3);
  let s = seed;
  for (let i = 0; i < d.length; i++) d[i] = (s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24;
  return { dtype: 'uint8', shape: [n, 32, 32, 3], data: d };
}

describe.skipIf(!hasEval)('fid-table with the ADM evaluator', () => {
  it('measures a present sample file, then answers from the cache', async () => {
    const weights = await formulaWeightsFile(tmp);
    const dir = join(tmp, 'measure');
    mkdirSync(dir);
    const ref = join(dir, 'ref.npz');
    await writeNpz(ref, { arr_0: images(6, 1) });
    await writeNpz(join(dir, 'rar_l.npz'), { arr_0: images(5, 2) });
    const r = await capture(['fid-table', '--dir', dir, '--ref', ref, '--inception', weights, '--device', 'cpu', '--json']);
    expect(r.code).toBe(0);
    const row = JSON.parse(r.out).models[1];
    expect(row).toMatchObject({ preset: 'rar-l', cached: false, ref: 'ref.npz', note: "5 samples, not the paper's 50000: not comparable" });
    expect(row.measured).toMatchObject({ sampleImages: 5, referenceImages: 6 });
    for (const k of ['fid', 'sfid', 'inceptionScore', 'precision', 'recall']) expect(Number.isFinite(row.measured[k])).toBe(true);
    const again = await capture(['fid-table', '--dir', dir, '--ref', ref, '--inception', join(tmp, 'none.pth')]);
    expect(again.code).toBe(0);
    expect(again.out).toMatch(new RegExp(`^rar-l\\s+461M\\s+1\\.70\\s+${row.measured.fid.toFixed(2)}\\s`, 'm'));
    expect(again.out).toContain('rar-l: 5 samples, not the paper\'s 50000: not comparable; cached (against ref.npz)');
  });
});
