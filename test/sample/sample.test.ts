// sampleImageNet / mergeSamples (lib/sample.ts) on a random N = 256 generator and
// vqgan-tiny (64x64 images): the images equal generate()'s for the same seed, runs
// stopped part-way (abort after a batch, abort inside the native job, a crash left
// PNGs newer than the manifest, a temp file and a broken PNG) resume to a byte-identical
// .npz, shards merge to the unsharded result, and the .npz never exists before it is
// complete. Skipped without the native model functions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generate, loadGenerator, loadTokenizer, type Generator, type Tokenizer } from '../../lib/generate.js';
import { mergeSamples, parseShard, planBatches, sampleImageName, sampleImageNet, sampleLayout, SampleLockedError, SamplesIncompleteError, shardRange, type SampleImageNetOptions } from '../../lib/sample.js';
import { tempDir } from '../helpers/tmp.js';
import { hasModelAddon, readSamples, SAMPLING, TOKENIZER, writeTinyGenerator } from './helpers.js';

const tmp = tempDir('sample');

describe('shards and batches', () => {
  it('parses i/n and rejects shards that do not exist', () => {
    expect(parseShard('1/4')).toEqual({ index: 1, count: 4 });
    expect(() => parseShard('3/2')).toThrow('--shard expects i/n with 0 <= i < n but received "3/2" (the shards of 2 are 0/2 to 1/2)');
    expect(() => parseShard('0/0')).toThrow('with n >= 1');
    expect(() => parseShard('a/2')).toThrow('--shard expects i/n, e.g. 0/2');
  });

  it('splits the images into contiguous blocks covering each index once', () => {
    for (const [total, n] of [
      [50_000, 8],
      [12, 5],
      [3, 4],
    ] as const) {
      const seen = new Array(total).fill(0);
      for (let i = 0; i < n; i++) {
        const [a, b] = shardRange(total, { index: i, count: n });
        for (let g = a; g < b; g++) seen[g]++;
      }
      expect(seen.every((c) => c === 1)).toBe(true);
    }
    expect(shardRange(50_000, { index: 1, count: 2 })).toEqual([25_000, 50_000]);
  });

  it('batches the missing indices in runs cut at multiples of the batch size', () => {
    expect(planBatches([0, 1, 2, 3, 4, 5, 6, 7, 8], 4)).toEqual([
      [0, 4],
      [4, 8],
      [8, 9],
    ]);
    expect(planBatches([2, 3, 5, 6, 7, 8, 9], 4)).toEqual([
      [2, 4],
      [5, 8],
      [8, 10],
    ]);
  });
});

describe.skipIf(!hasModelAddon())('sampleImageNet (native addon)', () => {
  let gen: Generator;
  let tok: Tokenizer;
  const genPath = join(tmp, 'tiny.bin');
  // 4 classes x 3 = 12 images in batches of 4
  const base = { classes: [0, 3, 5, 9], numPerClass: 3, batchSize: 4, seed: 7, ...SAMPLING };
  const opts = (out: string, more: Partial<SampleImageNetOptions> = {}): SampleImageNetOptions => ({ generator: gen, tokenizer: tok, out: join(tmp, out), ...base, ...more });
  let reference: Awaited<ReturnType<typeof readSamples>>;

  beforeAll(async () => {
    await writeTinyGenerator(genPath);
    gen = await loadGenerator(genPath, { device: 'cpu' });
    tok = await loadTokenizer(TOKENIZER, { device: 'cpu' });
    const r = await sampleImageNet(opts('ref'));
    expect(r.generated).toBe(12);
    expect(r.npzComplete).toBe(true);
    reference = await readSamples(join(tmp, 'ref.npz'));
  });
  afterAll(() => {
    gen?.dispose();
    tok?.dispose();
  });

  it('writes the PNGs and arr_0 = generate() of the same labels and seed (image g = f(seed, g))', async () => {
    expect(reference.shape).toEqual([12, 64, 64, 3]);
    expect(reference.labels).toEqual([0, 0, 0, 3, 3, 3, 5, 5, 5, 9, 9, 9]);
    const g = await generate({ generator: gen, tokenizer: tok, classLabels: reference.labels, seed: 7, batchSize: 5, ...SAMPLING });
    expect(Buffer.concat(g.images!.map((im) => im.data)).equals(reference.pixels)).toBe(true);
    const names = (await readdir(join(tmp, 'ref', 'images'))).sort();
    expect(names).toEqual(Array.from({ length: 12 }, (_, i) => sampleImageName(i)));
    const run = JSON.parse(await readFile(join(tmp, 'ref', 'run.json'), 'utf8'));
    expect(run.settings).toMatchObject({ numImages: 12, seed: '7', guidanceScale: 2, temperature: 1.05, precision: 'f32', tokenizer: { resolution: 64 } });
  });

  it('a rerun of a finished run does nothing', async () => {
    const notes: string[] = [];
    const r = await sampleImageNet(opts('ref', { onNote: (m) => notes.push(m) }));
    expect(r.generated).toBe(0);
    expect(r.alreadyDone).toBe(12);
    expect(r.npzComplete).toBe(true);
    expect(notes.join('\n')).toContain('complete already');
  });

  it('aborted after two batches: no .npz; resumed: the same arr_0, only the missing images generated', async () => {
    const ac = new AbortController();
    let npzSeen = false;
    const err = await sampleImageNet(
      opts('abort-batch', {
        signal: ac.signal,
        onBatchWritten: (b) => {
          npzSeen ||= existsSync(join(tmp, 'abort-batch.npz'));
          if (b.written === 8) ac.abort();
        },
      }),
    ).catch((e: unknown) => e as Error);
    expect((err as Error).name).toBe('AbortError');
    expect(npzSeen).toBe(false);
    expect(existsSync(join(tmp, 'abort-batch.npz'))).toBe(false);
    expect((await readdir(join(tmp, 'abort-batch', 'images'))).filter((n) => n.endsWith('.png'))).toHaveLength(8);
    const r = await sampleImageNet(opts('abort-batch', { batchSize: 3 })); // another batch size: same images
    expect([r.alreadyDone, r.generated]).toEqual([8, 4]);
    expect((await readSamples(join(tmp, 'abort-batch.npz'))).pixels.equals(reference.pixels)).toBe(true);
  });

  it('aborted inside a native sampling job, then resumed: the same arr_0', async () => {
    const ac = new AbortController();
    const err = await sampleImageNet(opts('abort-job', { signal: ac.signal, onProgress: (p) => p.sampled > 5.5 && ac.abort() })).catch((e: unknown) => e as Error);
    expect((err as Error).name).toBe('AbortError');
    expect(existsSync(join(tmp, 'abort-job.npz'))).toBe(false);
    const r = await sampleImageNet(opts('abort-job'));
    expect(r.alreadyDone + r.generated).toBe(12);
    expect(r.generated).toBeGreaterThan(0);
    expect((await readSamples(join(tmp, 'abort-job.npz'))).pixels.equals(reference.pixels)).toBe(true);
  });

  it('after a crash mid-batch (PNGs newer than the manifest, a temp file, a broken PNG) resumes to the same arr_0', async () => {
    const ac = new AbortController();
    await sampleImageNet(opts('crash', { signal: ac.signal, onBatchWritten: () => ac.abort() })).catch(() => undefined);
    const dir = join(tmp, 'crash', 'images');
    // a crash while writing batches 2 and 3: 4..8 renamed into place, the manifest not yet updated
    for (let g = 4; g <= 8; g++) await copyFile(join(tmp, 'ref', 'images', sampleImageName(g)), join(dir, sampleImageName(g)));
    await writeFile(join(dir, `.${sampleImageName(9)}.tmp-999999999-abc`), 'half a png');
    const png = await readFile(join(tmp, 'ref', 'images', sampleImageName(10)));
    await writeFile(join(dir, sampleImageName(10)), png.subarray(0, png.length >> 1)); // not possible with atomic writes, but disks fail
    // ... and an older rargen started it: noted, not refused
    const runFile = join(tmp, 'crash', 'run.json');
    const run = JSON.parse(await readFile(runFile, 'utf8'));
    expect(run.environment).toMatchObject({ device: 'cpu' });
    await writeFile(runFile, JSON.stringify({ ...run, environment: { rargen: '0.0.1', device: 'cpu' } }));
    const notes: string[] = [];
    const r = await sampleImageNet(opts('crash', { onNote: (m) => notes.push(m) }));
    expect([r.alreadyDone, r.generated]).toEqual([9, 3]);
    expect(notes.join('\n')).toMatch(/crash was started with rargen 0\.0\.1 on cpu, this is rargen \S+ on cpu: the images are sampled the same way, but their numerics may differ/);
    expect(notes.join('\n')).toContain('6 not in a manifest, checked by decoding');
    expect(notes.join('\n')).toMatch(/000010\.png is not a complete 64x64 PNG/);
    expect((await readdir(dir)).filter((n) => n.startsWith('.'))).toEqual([]);
    expect((await readSamples(join(tmp, 'crash.npz'))).pixels.equals(reference.pixels)).toBe(true);
  });

  it('shards 0/2 and 1/2: the first leaves no .npz, the last one to finish writes it; equal to the unsharded run', async () => {
    const a = await sampleImageNet(opts('sharded', { shard: { index: 0, count: 2 } }));
    expect(a.range).toEqual([0, 6]);
    expect(a.missing).toBe(6);
    expect(a.npzComplete).toBe(false);
    expect(existsSync(join(tmp, 'sharded.npz'))).toBe(false);
    const b = await sampleImageNet(opts('sharded', { shard: { index: 1, count: 2 } }));
    expect(b.range).toEqual([6, 12]);
    expect(b.npzComplete).toBe(true);
    const s = await readSamples(join(tmp, 'sharded.npz'));
    expect(s.pixels.equals(reference.pixels)).toBe(true);
    expect(s.labels).toEqual(reference.labels);
  });

  it('shards run in separate folders are joined by mergeSamples; a missing shard is named', async () => {
    await sampleImageNet(opts('m1', { shard: { index: 0, count: 3 } }));
    await sampleImageNet(opts('m1', { shard: { index: 2, count: 3 }, batchSize: 2 }));
    await sampleImageNet(opts('m2', { shard: { index: 1, count: 3 } }));
    const err = await mergeSamples(join(tmp, 'm1'), { shards: 3 }).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(SamplesIncompleteError);
    expect((err as Error).message).toBe('4 of 12 images are missing (shard 1/3 (images 4..7) misses 4); run rargen sample-imagenet with the same settings (and --shard) to finish them');
    expect(existsSync(join(tmp, 'm1.npz'))).toBe(false);
    const r = await mergeSamples(join(tmp, 'm1'), { sources: [join(tmp, 'm2')], npz: join(tmp, 'merged', 'all.npz') });
    expect(r).toMatchObject({ numImages: 12, resolution: 64 });
    expect((await readSamples(join(tmp, 'merged', 'all.npz'))).pixels.equals(reference.pixels)).toBe(true);
  });

  it('merging checks each PNG against the CRC its manifest recorded', async () => {
    const out = join(tmp, 'tampered');
    await mkdir(join(out, 'images'), { recursive: true });
    await mkdir(join(out, 'progress'), { recursive: true });
    await copyFile(join(tmp, 'ref', 'run.json'), join(out, 'run.json'));
    await copyFile(join(tmp, 'ref', 'progress', 'shard-0-of-1.json'), join(out, 'progress', 'shard-0-of-1.json'));
    for (let g = 0; g < 12; g++) await copyFile(join(tmp, 'ref', 'images', sampleImageName(g === 5 ? 6 : g)), join(out, 'images', sampleImageName(g)));
    await expect(mergeSamples(out)).rejects.toThrow(/000005\.png does not hold the pixels its manifest recorded \(CRC mismatch\); delete it and rerun/);
    expect(existsSync(sampleLayout(out).npz)).toBe(false);
    expect((await readdir(tmp)).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('refuses to resume with other settings, and a second process on the same shard', async () => {
    await expect(sampleImageNet(opts('ref', { seed: 8 }))).rejects.toThrow(/was started with other settings \(seed "7" there, "8" here\): resume with the same settings, or pick another --out/);
    await expect(sampleImageNet(opts('ref', { numPerClass: 2 }))).rejects.toThrow(/numPerClass 3 there, 2 here/);
    const both = await Promise.allSettled([sampleImageNet(opts('busy')), sampleImageNet(opts('busy'))]);
    expect(both.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const err = (both.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason;
    expect(err).toBeInstanceOf(SampleLockedError);
    expect((err as Error).message).toMatch(/shard 0\/1 of .*busy is already running \(pid \d+ on /);
  });

  it('validates its options', async () => {
    await expect(sampleImageNet(opts('bad', { numPerClass: 0 }))).rejects.toThrow('Expected integer >= 1 for numPerClass but received 0');
    await expect(sampleImageNet(opts('bad', { classes: [1, 10] }))).rejects.toThrow('Expected integer between 0 and 9 for classes[1] but received 10');
    await expect(sampleImageNet(opts('bad', { shard: { index: 3, count: 2 } }))).rejects.toThrow('Expected a shard {index, count} with index < count for shard but received an object');
    expect(existsSync(join(tmp, 'bad'))).toBe(false);
  });
});
