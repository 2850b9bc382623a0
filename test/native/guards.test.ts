// Issue 12's addon findings (the addon is reachable through the exported native()), one
// test each, in process: each call used to crash (SIGSEGV, abort, deadlock) and must now
// throw an error naming the function and the problem. The fuzz suite
// (test/fuzz/fuzz.test.ts) runs the same calls, and many more, in child processes.
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { addon, loadVqTiny, rarTinyConfig } from './helpers.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const A = addon as any;
const transfer = (a: ArrayBufferView) => structuredClone(a.buffer, { transfer: [a.buffer as ArrayBuffer] });
// a real collection, so the transferred-away memory is freed while the worker runs
v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

describe('sizes', () => {
  it('inceptionScore: rows x classes that wraps to 0 is refused, not read from an empty array', () => {
    expect(() => A.inceptionScore(new Float32Array(0), 2 ** 40, 2 ** 24, 1)).toThrow('rargen.inceptionScore: the sizes given for logits overflow 64 bits when multiplied');
  });

  it('tf1ResizeBilinear: a 51 GB output is a RangeError, not an uncatchable allocation failure', () => {
    expect(() => A.tf1ResizeBilinear(new Uint8Array(3), 1, 1, 1, 65536, 65536)).toThrow(
      'rargen.tf1ResizeBilinear: the output (1 x 3 x 65536 x 65536 floats) would take 51539607552 bytes, more than the 4294967296 bytes one native call allocates',
    );
    // an ordinary call still works
    expect(A.tf1ResizeBilinear(new Uint8Array(12).fill(9), 1, 2, 2, 3, 3).length).toBe(27);
  });

  it('featureStatsCreate and precisionRecall: dim x dim and tile sizes are capped before allocating', () => {
    expect(() => A.featureStatsCreate(65536)).toThrow('rargen.featureStatsCreate: the covariance of dim 65536 would take 34359738368 bytes');
    expect(() => A.precisionRecall(new Float32Array(16), 4, new Float32Array(16), 4, 4, { rowBlock: 2 ** 20, colBlock: 2 ** 20 })).toThrow(
      'rargen.precisionRecall: a rowBlock x colBlock distance tile would take 4398046511104 bytes',
    );
  });
});

describe('handles carry type tags', () => {
  const inc = A.inceptionCreate('cpu', 1);
  const stats = A.featureStatsCreate(4);
  const trainer = A.createTrainer(rarTinyConfig(), 'cpu', { dropout: 0, attnDropout: 0 });
  const model = A.createRar(rarTinyConfig(), 'cpu', 'f32');

  it('an Inception handle passed as feature stats (abort before), and stats passed as Inception', () => {
    expect(() => A.featureStatsResult(inc)).toThrow('rargen.featureStatsResult: Expected a stats handle (from featureStatsCreate) for stats but received another kind of handle');
    expect(() => A.featureStatsAdd(inc, new Float32Array(4), 1)).toThrow('received another kind of handle');
    expect(() => A.inceptionFinalize(stats)).toThrow('rargen.inceptionFinalize: Expected an Inception handle (from inceptionCreate) for model but received another kind of handle');
  });

  it("a trainer's handle passed as Inception (segfault before) or as stats (deadlock before)", () => {
    expect(() => A.inceptionForward(trainer, new Uint8Array(12), 1, 2, 2)).toThrow('rargen.inceptionForward: Expected an Inception handle (from inceptionCreate) for model but received another kind of handle');
    expect(() => A.featureStatsResult(trainer)).toThrow('received another kind of handle');
    expect(() => A.trainInfo(model)).toThrow('rargen.trainInfo: Expected a trainer from createTrainer() for trainer but received another kind of handle');
  });

  it('foreign handles inside a trainer object, and objects that only look like models', () => {
    // (the trainer handle of old was an object holding an External: such wrappers are refused too)
    for (const h of [stats, inc, trainer]) expect(() => A.trainInfo({ __rargenTrainer: h })).toThrow('rargen.trainInfo: Expected a trainer from createTrainer() for trainer but received an object');
    const fake = Object.create(Object.getPrototypeOf(model));
    expect(() => A.finalize(fake)).toThrow('rargen.finalize: Expected a model from createRar() or createVq() for model but received an object');
    expect(() => A.free(fake)).toThrow('rargen.free: Expected a model from createRar() or createVq() for model but received an object');
    expect(() => A.free(trainer)).toThrow('rargen.free: Expected a model from createRar() or createVq() for model but received another kind of handle');
    // the real ones still work
    expect(A.trainInfo(trainer).names.length).toBeGreaterThan(0);
    expect(() => A.featureStatsResult(stats)).toThrow('the covariance needs at least 2 feature rows, got 0');
  });
});

describe('inputs are copied before a worker runs', () => {
  it('featureStatsAdd: transferring the buffer away and collecting during the call changes nothing', async () => {
    const stats = A.featureStatsCreate(4);
    const f = Float32Array.from({ length: 4 * 512 }, (_, i) => (i % 4) + 1);
    const p = A.featureStatsAdd(stats, f, 512);
    transfer(f);
    gc();
    expect(f.length).toBe(0); // detached
    await p;
    const r = A.featureStatsResult(stats);
    expect(r.count).toBe(512);
    expect(Array.from(r.mu)).toEqual([1, 2, 3, 4]);
  });

  it('inceptionScore, frechetDistance, precisionRecall: same under transfer', async () => {
    const logits = new Float32Array(64 * 8).fill(1);
    const isP = A.inceptionScore(logits, 64, 8, 16);
    transfer(logits);
    const mu = Float64Array.of(0, 0), s = Float64Array.of(1, 0, 0, 1), mu2 = Float64Array.of(3, 4), s2 = Float64Array.of(1, 0, 0, 1);
    const fdP = A.frechetDistance(mu, s, mu2, s2);
    for (const a of [mu, s, mu2, s2]) transfer(a);
    const ref = Float32Array.from({ length: 64 }, (_, i) => i);
    const prP = A.precisionRecall(ref, 32, ref.slice(), 32, 2, { k: 3 });
    transfer(ref);
    gc();
    expect((await isP).score).toBeCloseTo(1, 6); // uniform predictions: IS = 1
    expect(await fdP).toBeCloseTo(25, 9); // |mu1 - mu2|^2, equal covariances
    expect(await prP).toEqual({ precision: 1, recall: 1 }); // the same set twice
  });

  it('a detached buffer passed at entry is an empty array, refused by the size check', async () => {
    const f = new Float32Array(8);
    transfer(f);
    expect(() => A.inceptionScore(f, 2, 4, 1)).toThrow('rargen.inceptionScore: Expected 8 elements in logits but received 0');
  });

  it('vqDecode copies too (the model binding copies every array)', async () => {
    const vq = await loadVqTiny();
    try {
      const tokens = new Int32Array(256).fill(3);
      const want = await A.vqDecode(vq, tokens.slice(), 1);
      const p = A.vqDecode(vq, tokens, 1);
      transfer(tokens);
      gc();
      expect(Buffer.from((await p).buffer).equals(Buffer.from(want.buffer))).toBe(true);
    } finally {
      A.free(vq);
    }
  });
});
