// `rargen sample-imagenet` killed with SIGKILL part-way, twice, then run again to the
// end: the .npz is byte-identical to an uninterrupted run's (made in-process with the
// API), and no .npz exists while images are missing. The CLI runs from the TypeScript
// sources in a child process (vite-node test/sample/cli-entry.ts).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadGenerator, loadTokenizer, type Generator, type Tokenizer } from '../../lib/generate.js';
import { sampleImageNet } from '../../lib/sample.js';
import { tempDir } from '../helpers/tmp.js';
import { hasModelAddon, readSamples, SAMPLING, TOKENIZER, writeTinyGenerator } from './helpers.js';

const ROOT = join(import.meta.dirname, '..', '..');
const VITE_NODE = join(ROOT, 'node_modules', 'vite-node', 'vite-node.mjs');
const tmp = tempDir('sample-kill');

/** Starts the CLI; resolves when it exits, or kills it with SIGKILL once `killAt` PNGs exist. */
function runCli(args: string[], killAt?: { images: string; count: number }): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; pngs: number }> {
  return new Promise((resolvePromise, reject) => {
    const child: ChildProcess = spawn(process.execPath, [VITE_NODE, join(import.meta.dirname, 'cli-entry.ts'), ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let pngs = 0;
    child.stderr!.on('data', (d) => (stderr += String(d)));
    let timer: NodeJS.Timeout | undefined;
    if (killAt) {
      timer = setInterval(async () => {
        const names = await readdir(killAt.images).catch(() => [] as string[]);
        pngs = names.filter((n) => n.endsWith('.png') && !n.startsWith('.')).length;
        if (pngs >= killAt.count && child.exitCode === null) {
          child.kill('SIGKILL');
          clearInterval(timer);
        }
      }, 5);
    }
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (timer) clearInterval(timer);
      resolvePromise({ code, signal, stderr, pngs });
    });
  });
}

describe.skipIf(!hasModelAddon())('sample-imagenet under SIGKILL', () => {
  const genPath = join(tmp, 'tiny.bin');
  // 10 classes x 4 = 40 images, batches of 4
  const settings = { numPerClass: 4, batchSize: 4, seed: 11, ...SAMPLING };
  let gen: Generator;
  let tok: Tokenizer;

  beforeAll(async () => {
    await writeTinyGenerator(genPath);
    gen = await loadGenerator(genPath, { device: 'cpu' });
    tok = await loadTokenizer(TOKENIZER, { device: 'cpu' });
  });
  afterAll(() => {
    gen?.dispose();
    tok?.dispose();
  });

  it('killed twice mid-run and restarted: the same arr_0 as an uninterrupted run', async () => {
    await sampleImageNet({ generator: gen, tokenizer: tok, out: join(tmp, 'ref'), ...settings });
    const ref = await readSamples(join(tmp, 'ref.npz'));
    expect(ref.shape).toEqual([40, 64, 64, 3]);

    const out = join(tmp, 'run');
    const images = join(out, 'images');
    const args = [
      'sample-imagenet',
      '--generator', genPath,
      '--tokenizer', TOKENIZER,
      '--out', out,
      '--num-per-class', '4',
      '--batch-size', '4',
      '--seed', '11',
      '--guidance-scale', String(SAMPLING.guidanceScale),
      '--guidance-pow', String(SAMPLING.guidanceScalePow),
      '--temperature', String(SAMPLING.temperature),
      '--device', 'cpu',
    ];
    const first = await runCli(args, { images, count: 6 });
    expect(first.signal).toBe('SIGKILL');
    expect(existsSync(join(tmp, 'run.npz'))).toBe(false);
    const second = await runCli(args, { images, count: 22 });
    expect(second.signal).toBe('SIGKILL');
    expect(second.stderr).toMatch(/resuming: \d+ of the shard's 40 images exist/);
    expect(existsSync(join(tmp, 'run.npz'))).toBe(false);
    console.log(`killed at ${first.pngs} and ${second.pngs} PNGs`);
    const last = await runCli(args);
    expect(last.stderr).toMatch(/resuming: \d+ of the shard's 40 images exist/);
    expect(last.code).toBe(0);
    const got = await readSamples(join(tmp, 'run.npz'));
    expect(got.shape).toEqual(ref.shape);
    expect(got.labels).toEqual(ref.labels);
    expect(got.pixels.equals(ref.pixels)).toBe(true);
    expect((await readdir(images)).filter((n) => n.startsWith('.'))).toEqual([]);
  });
});
