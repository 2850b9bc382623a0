// (e) of issue 15: `mpirun -np 2 rargen sample-imagenet` and `mpirun -np 2 rargen fid`
// give what one process gives: the same .npz, byte for byte, and the same five numbers.
// Small fixtures: the random 1-layer generator and vqgan-tiny of test/sample (64x64
// images), the formula Inception weights of test/fid. Every rank is a real CLI process
// under mpirun (test/mpi/helpers.ts); skipped, saying so, where mpirun is absent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeNpz } from '../../lib/io/index.js';
import { TOKENIZER, writeTinyGenerator, readSamples } from '../sample/helpers.js';
import { formulaWeightsFile, testImages } from '../fid/helpers.js';
import { canRun, cli, CLI, compileCli, mpirun } from './helpers.js';

let tmp = '';
let gen = '';

beforeAll(async () => {
  if (!canRun) return;
  await compileCli();
  tmp = await mkdtemp(join(tmpdir(), 'rargen-mpi-sample-'));
  gen = join(tmp, 'tiny.bin');
  await writeTinyGenerator(gen);
}, 300_000);
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe.skipIf(!canRun)('mpirun -np 2 rargen sample-imagenet', () => {
  // 7 images (classes 0-6, one each) in batches of 2: the ranks' shards are 0..2 and 3..6
  const args = (out: string) => ['sample-imagenet', '--generator', gen, '--tokenizer', TOKENIZER, '--out', out, '--classes', '0-6', '--num-per-class', '1', '--seed', '11', '--batch-size', '2', '--device', 'cpu', '--guidance-scale', '2', '--guidance-pow', '1', '--temperature', '1.05'];

  it('each rank samples its shard, rank 0 writes the .npz once: byte-identical to one process', () => {
    const one = cli(args(join(tmp, 's1')));
    expect(one.code, one.out).toBe(0);
    const two = mpirun(['-np', '2', process.execPath, CLI, ...args(join(tmp, 's2'))]);
    expect(two.code, two.out).toBe(0);
    const a = readFileSync(join(tmp, 's1.npz'));
    const b = readFileSync(join(tmp, 's2.npz'));
    expect(b.length).toBe(a.length);
    expect(b.equals(a)).toBe(true);
    // every rank took its own shard and said so; the .npz was written once, by rank 0
    expect(two.out).toMatch(/rank 0 of 2\): images 0\.\.2 \(shard 0\/2\): 0 were there, 3 generated/);
    expect(two.out).toMatch(/rank 1 of 2\): images 3\.\.6 \(shard 1\/2\): 0 were there, 4 generated/);
    expect(two.out.match(/holds all 7 images/g)?.length).toBe(1);
    for (const r of [0, 1]) expect(existsSync(join(tmp, 's2', 'progress', `shard-${r}-of-2.json`))).toBe(true);
    // the same command again finds everything done and leaves the .npz as it is
    const again = mpirun(['-np', '2', process.execPath, CLI, ...args(join(tmp, 's2'))]);
    expect(again.code, again.out).toBe(0);
    expect(again.out).toMatch(/s2\.npz is complete already/);
    expect(readFileSync(join(tmp, 's2.npz')).equals(a)).toBe(true);
  }, 300_000);

  it('--shard under mpirun is a usage error on every rank', () => {
    const r = mpirun(['-np', '2', process.execPath, CLI, ...args(join(tmp, 'sx')), '--shard', '0/2']);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/--shard is set by mpirun \(this is rank [01] of 2, so shard [01]\/2\): drop --shard, or run without mpirun/);
    expect(existsSync(join(tmp, 'sx'))).toBe(false);
  }, 120_000);

  it('the .npz holds what sampleImageNet makes (labels in class order)', async () => {
    const s = await readSamples(join(tmp, 's2.npz'));
    expect(s.shape).toEqual([7, 64, 64, 3]);
    expect(s.labels).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });
});

describe.skipIf(!canRun)('mpirun -np 2 rargen fid', () => {

  it('splits the Inception passes over the ranks and prints the numbers one process prints', async () => {
    const weights = await formulaWeightsFile(tmp);
    const ref = join(tmp, 'ref.npz');
    const sam = join(tmp, 'sam.npz');
    // 5 images in batches of 2: batches 0 and 2 on rank 0, batch 1 on rank 1 (a partial last batch)
    await writeNpz(ref, { arr_0: { dtype: 'uint8', shape: [5, 40, 48, 3], data: testImages(5, 40, 48, 1) } });
    await writeNpz(sam, { arr_0: { dtype: 'uint8', shape: [5, 32, 32, 3], data: testImages(5, 32, 32, 2) } });
    const args = ['fid', ref, sam, '--inception', weights, '--device', 'cpu', '--batch-size', '2', '--split-size', '2', '--json'];
    const one = cli(args, { timeout: 300_000 });
    expect(one.code, one.out).toBe(0);
    const two = mpirun(['-np', '2', process.execPath, CLI, ...args], { timeout: 300_000 });
    expect(two.code, two.out).toBe(0);
    const a = JSON.parse(one.stdout) as Record<string, number>;
    expect(Object.keys(a)).toEqual(['fid', 'sfid', 'inception_score', 'precision', 'recall']);
    for (const v of Object.values(a)) expect(Number.isFinite(v)).toBe(true);
    expect(two.stdout).toBe(one.stdout); // rank 0 alone prints: one line, the same digits
    expect(two.stderr).toMatch(/5 reference and 5 sample images on cpu and 1 more rank/);
  }, 600_000);
});
