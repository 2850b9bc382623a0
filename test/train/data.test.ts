import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TokenDataset, stepRandomness, DataError, type TokenDatasetOptions } from '../../lib/train/data.js';
import { Rng, deriveSeed } from '../../lib/train/rng.js';

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rargen-data-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Line i: class i % K, tokens (i * 7 + j) % V; line number recoverable from tokens[0..1]. */
function writeData(name: string, lines: number, N = 8, V = 1024, K = 10): string {
  const p = join(dir, name);
  const out: string[] = [];
  for (let i = 0; i < lines; i++) {
    const toks = Array.from({ length: N }, (_, j) => (j === 0 ? i % V : j === 1 ? Math.floor(i / V) : (i * 7 + j) % V));
    out.push(JSON.stringify({ class_id: i % K, tokens: toks, extra: 'ignored' }));
  }
  writeFileSync(p, out.join('\n') + '\n');
  return p;
}

const lineOf = (ids: Int32Array, b: number, N: number) => ids[b * N]! + 1024 * ids[b * N + 1]!;

const OPTS: TokenDatasetOptions = { seqLen: 8, codebookSize: 1024, numClasses: 10, bufferSize: 16, shuffle: true, seed: 5 };

async function drain(ds: TokenDataset, batches: number, B: number): Promise<number[]> {
  const seen: number[] = [];
  for (let i = 0; i < batches; i++) {
    const b = await ds.nextBatch(B);
    for (let k = 0; k < B; k++) seen.push(lineOf(b.ids, k, 8));
  }
  return seen;
}

describe('TokenDataset', () => {
  it('reads in file order without shuffling, with epochs running on', async () => {
    const p = writeData('order.jsonl', 10);
    const ds = new TokenDataset(p, { ...OPTS, shuffle: false });
    const b = await ds.nextBatch(4);
    expect([0, 1, 2, 3].map((k) => lineOf(b.ids, k, 8))).toEqual([0, 1, 2, 3]);
    expect([...b.classIds]).toEqual([0, 1, 2, 3]);
    const b2 = await ds.nextBatch(8); // lines 4..9, then 0, 1 of epoch 1
    expect([...Array(8).keys()].map((k) => lineOf(b2.ids, k, 8))).toEqual([4, 5, 6, 7, 8, 9, 0, 1]);
    expect([...b2.epochs]).toEqual([0, 0, 0, 0, 0, 0, 1, 1]);
    expect(ds.epochLength).toBe(10);
    expect(ds.state()).toMatchObject({ epoch: 1, emitted: 2 });
    ds.close();
  });

  it('shuffles deterministically: every line once per epoch, same seed same order, new order each epoch', async () => {
    const p = writeData('shuffle.jsonl', 100);
    const a = new TokenDataset(p, OPTS);
    const b = new TokenDataset(p, OPTS);
    const c = new TokenDataset(p, { ...OPTS, seed: 6 });
    const ea = await drain(a, 25, 4); // 100 = one epoch
    const eb = await drain(b, 25, 4);
    const ec = await drain(c, 25, 4);
    expect(ea).toEqual(eb);
    expect(ea).not.toEqual(ec);
    expect([...ea].sort((x, y) => x - y)).toEqual([...Array(100).keys()]);
    expect(ea).not.toEqual([...Array(100).keys()]);
    const e2 = await drain(a, 25, 4);
    expect([...e2].sort((x, y) => x - y)).toEqual([...Array(100).keys()]);
    expect(e2).not.toEqual(ea);
    // a buffer of 16 moves a line at most ~16 slots earlier than its file position
    ea.forEach((line, pos) => expect(pos).toBeGreaterThanOrEqual(line - 16));
    for (const d of [a, b, c]) d.close();
  });

  it('a buffer as large as the file is a full shuffle', async () => {
    const p = writeData('full.jsonl', 64);
    const ds = new TokenDataset(p, { ...OPTS, bufferSize: 1000 });
    const e = await drain(ds, 16, 4);
    expect([...e].sort((x, y) => x - y)).toEqual([...Array(64).keys()]);
    // the last line may come first
    const firstQuarter = e.slice(0, 16);
    expect(Math.max(...firstQuarter)).toBeGreaterThan(40);
    ds.close();
  });

  it('resumes exactly from a saved state, mid-epoch and across epochs', async () => {
    const p = writeData('resume.jsonl', 50);
    const ref = new TokenDataset(p, OPTS);
    const all = await drain(ref, 40, 3); // 120 samples: 2.4 epochs
    ref.close();
    for (const cut of [1, 7, 16, 17, 33]) {
      const a = new TokenDataset(p, OPTS);
      const before = await drain(a, cut, 3);
      const st = JSON.parse(JSON.stringify(a.state()));
      a.close();
      const b = new TokenDataset(p, OPTS);
      await b.restore(st);
      const after = await drain(b, 40 - cut, 3);
      b.close();
      expect([...before, ...after]).toEqual(all);
    }
  });

  it('refuses to resume on a different file or shuffling', async () => {
    const p = writeData('r1.jsonl', 20);
    const a = new TokenDataset(p, OPTS);
    await a.nextBatch(2);
    const st = a.state();
    a.close();
    await expect(new TokenDataset(p, { ...OPTS, seed: 9 }).restore(st)).rejects.toThrow(/seed 9, saved 5/);
    const q = writeData('r2.jsonl', 21);
    await expect(new TokenDataset(q, OPTS).restore(st)).rejects.toThrow(/file size/);
  });

  it('shards lines across ranks disjointly', async () => {
    const p = writeData('shard.jsonl', 30);
    const seen: number[][] = [];
    for (let rank = 0; rank < 3; rank++) {
      const ds = new TokenDataset(p, { ...OPTS, rank, worldSize: 3 });
      seen.push(await drain(ds, 5, 2));
      ds.close();
      expect(seen[rank]!.every((l) => l % 3 === rank)).toBe(true);
    }
    expect(seen.flat().sort((x, y) => x - y)).toEqual([...Array(30).keys()]);
  });

  it('names the file, line and value of bad data', async () => {
    const p = join(dir, 'bad.jsonl');
    writeFileSync(p, '{"class_id": 1, "tokens": [1,2,3,4,5,6,7,8]}\n\n{"class_id": 12, "tokens": [1,2,3,4,5,6,7,8]}\n');
    const ds = new TokenDataset(p, { ...OPTS, shuffle: false });
    await expect(ds.nextBatch(2)).rejects.toThrow(/bad\.jsonl:3: expected an integer class_id between 0 and 9 but received 12/);
    ds.close();
    writeFileSync(p, '{"class_id": 1, "tokens": [1,2,3]}\n');
    await expect(new TokenDataset(p, OPTS).nextBatch(1)).rejects.toThrow(/list of 8 integers but received a list of 3/);
    writeFileSync(p, '{"class_id": 1, "tokens": [1,2,3,4,5,6,7,1024]}\n');
    await expect(new TokenDataset(p, OPTS).nextBatch(1)).rejects.toThrow(/tokens\[7\] to be an integer between 0 and 1023 but received 1024/);
    writeFileSync(p, '{"class_id": 1, "tokens": [[1,2,3,4,5,6,7,8]]}\n');
    const nested = await new TokenDataset(p, OPTS).nextBatch(1);
    expect([...nested.ids]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    writeFileSync(p, '\n');
    await expect(new TokenDataset(p, OPTS).nextBatch(1)).rejects.toThrow(DataError);
    expect(() => new TokenDataset(join(dir, 'missing.jsonl'), OPTS)).toThrow(/cannot read the pretokenized data file/);
  });

  it('holds samples compactly: 2 bytes per token in one slab, whatever the file size', async () => {
    const N = 256;
    const lines = 20_000;
    const p = join(dir, 'big.jsonl');
    const rows: string[] = [];
    for (let i = 0; i < lines; i++) rows.push(JSON.stringify({ class_id: i % 1000, tokens: Array.from({ length: N }, (_, j) => (i + j) % 1024) }));
    writeFileSync(p, rows.join('\n'));
    const ds = new TokenDataset(p, { seqLen: N, codebookSize: 1024, numClasses: 1000, bufferSize: 20_000, shuffle: true, seed: 1 });
    expect(ds.residentBytes).toBe(20_000 * N * 2 + 20_000 * 4); // 10.3 MB for 5.1M tokens
    (globalThis as { gc?: () => void }).gc?.();
    const heap0 = process.memoryUsage().heapUsed;
    const b = await ds.nextBatch(64); // fills the whole buffer: every line resident
    (globalThis as { gc?: () => void }).gc?.();
    const heapGrowth = process.memoryUsage().heapUsed - heap0;
    // 20,000 lines as JS number arrays would take > 20,000 * 256 * 8 = 41 MB of heap.
    expect(heapGrowth).toBeLessThan(20 * 1024 * 1024);
    expect(b.ids.length).toBe(64 * N);
    ds.close();
  });
});

describe('step randomness', () => {
  const o = { seed: 42, seqLen: 16, codebookSize: 32, numClasses: 10, randomRatio: 1, classLabelDropout: 0.1 };
  const classes = Int32Array.from({ length: 512 }, (_, i) => i % 10);

  it('is a function of (seed, step) only', () => {
    const a = stepRandomness(o, 7, classes);
    const b = stepRandomness(o, 7, classes);
    const c = stepRandomness(o, 8, classes);
    expect(a).toEqual(b);
    expect(a.orders).not.toEqual(c.orders);
    expect(stepRandomness({ ...o, rank: 1 }, 7, classes).orders).not.toEqual(a.orders);
  });

  it('draws permutations with probability r and drops labels to the null class with probability p', () => {
    const B = classes.length;
    const full = stepRandomness(o, 1, classes);
    for (let b = 0; b < B; b++) {
      const row = [...full.orders.subarray(b * 16, b * 16 + 16)].sort((x, y) => x - y);
      expect(row).toEqual([...Array(16).keys()]);
    }
    expect(full.randomOrder.every((x) => x === 1)).toBe(true);
    const none = stepRandomness({ ...o, randomRatio: 0 }, 1, classes);
    expect(none.randomOrder.every((x) => x === 0)).toBe(true);
    for (let b = 0; b < B; b++) expect([...none.orders.subarray(b * 16, b * 16 + 16)]).toEqual([...Array(16).keys()]);
    let randomCount = 0;
    let dropped = 0;
    for (let step = 0; step < 20; step++) {
      const h = stepRandomness({ ...o, randomRatio: 0.3 }, step, classes);
      randomCount += h.randomOrder.reduce((s, x) => s + x, 0);
      h.condition.forEach((c, b) => {
        if (c === 32 + 10 + 1) dropped++;
        else expect(c).toBe(32 + 1 + classes[b]!);
      });
    }
    expect(randomCount / (20 * B)).toBeCloseTo(0.3, 1);
    expect(dropped / (20 * B)).toBeCloseTo(0.1, 1);
    expect(() => stepRandomness(o, 0, Int32Array.of(10))).toThrow(/class ids between 0 and 9/);
  });
});

describe('Rng', () => {
  it('is xoshiro128** (reference values) and restores from its state', () => {
    // xoshiro128** from state (1, 2, 3, 4): first outputs of the reference C code
    const r = new Rng([1, 2, 3, 4]);
    expect([r.nextU32(), r.nextU32(), r.nextU32(), r.nextU32()]).toEqual([11520, 0, 5927040, 70819200]);
    const a = new Rng(123);
    for (let i = 0; i < 10; i++) a.nextU32();
    const b = new Rng(a.state());
    for (let i = 0; i < 10; i++) expect(b.nextU32()).toBe(a.nextU32());
  });

  it('draws uniform integers and permutations', () => {
    const r = new Rng(deriveSeed(1, 2, 3));
    const counts = new Array(7).fill(0);
    for (let i = 0; i < 70_000; i++) counts[r.nextInt(7)]++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(500);
    const p = new Int32Array(100);
    r.permutation(p, 0, 100);
    expect([...p].sort((x, y) => x - y)).toEqual([...Array(100).keys()]);
    expect(deriveSeed(1, 2, 3)).toBe(deriveSeed(1, 2, 3));
    expect(deriveSeed(1, 2, 3)).not.toBe(deriveSeed(1, 3, 2));
    expect(deriveSeed(2 ** 40, 1)).not.toBe(deriveSeed(0, 1));
  });
});
