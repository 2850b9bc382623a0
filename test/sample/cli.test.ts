// The sampling commands through the dispatcher, in-process: usage errors of
// sample-imagenet and merge-samples, and fid-table (the paper column with "not
// measured", cached measurements keyed by file size and mtime, --json). A measurement
// with the real evaluator is in fid-table-eval.test.ts.
import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cachePath, fidTable, formatTable } from '../../lib/commands/fid-table.js';
import { PAPER_MODELS } from '../../lib/paper.js';
import { PRESETS } from '../../lib/config.js';
import type { EvaluateResult } from '../../lib/fid.js';
import { tempDir } from '../helpers/tmp.js';
import { capture, hasModelAddon, TOKENIZER, writeTinyGenerator } from './helpers.js';

const tmp = tempDir('sample-cli');

describe('sample-imagenet and merge-samples arguments', () => {
  const req = ['sample-imagenet', '--generator', 'g.bin', '--tokenizer', 't.bin', '--out', join(tmp, 'x')];

  it('bad --shard, --num-per-class and missing options are usage errors (exit 2) that say what is wrong', async () => {
    for (const [args, msg] of [
      [[...req, '--shard', '3/2'], 'rargen sample-imagenet: --shard expects i/n with 0 <= i < n but received "3/2" (the shards of 2 are 0/2 to 1/2)'],
      [[...req, '--shard', 'half'], 'rargen sample-imagenet: --shard expects i/n, e.g. 0/2 for the first of two shards, but received "half"'],
      [[...req, '--num-per-class', '0'], 'rargen sample-imagenet: --num-per-class expects an integer >= 1 but received "0"'],
      [[...req, '--batch-size', '0.5'], 'rargen sample-imagenet: --batch-size expects an integer >= 1 but received "0.5"'],
      [['sample-imagenet', '--generator', 'g.bin', '--tokenizer', 't.bin'], 'rargen sample-imagenet: --out is required'],
      [['sample-imagenet', '--generator', 'g.bin', '--tokenizer', 't.bin', '--out', 'rar_b.npz'], 'rargen sample-imagenet: --out is the run folder (the .npz goes to OUT.npz, or to --npz FILE) but received "rar_b.npz"'],
      [[...req, '--precision', 'f8'], 'rargen sample-imagenet: --precision expects one of f32, f16, bf16 but received "f8"'],
      [['merge-samples'], 'rargen merge-samples: expected the run folder OUT (the --out of rargen sample-imagenet)'],
      [['merge-samples', tmp, '--shards', '0'], 'rargen merge-samples: --shards expects an integer >= 1 but received "0"'],
    ] as const) {
      const r = await capture([...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err.split('\n')[0]).toBe(msg);
    }
    expect(existsSync(join(tmp, 'x'))).toBe(false);
  });

  it('merge-samples on a folder without a run fails naming it (exit 1)', async () => {
    const r = await capture(['merge-samples', join(tmp, 'nothing')]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${join(tmp, 'nothing')} holds no sampling run (no run.json)`);
  });

  it('--help of each command', async () => {
    for (const cmd of ['sample-imagenet', 'merge-samples', 'fid-table']) {
      const r = await capture([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(new RegExp(`^Usage: rargen ${cmd}`));
    }
  });

  it.skipIf(!hasModelAddon())('class ids outside the generator are rejected before sampling', async () => {
    const gen = join(tmp, 'tiny.bin');
    await writeTinyGenerator(gen);
    const r = await capture(['sample-imagenet', '--generator', gen, '--tokenizer', TOKENIZER, '--out', join(tmp, 'cls'), '--classes', '0,12', '--device', 'cpu']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('Expected integer between 0 and 9 for classes[1] but received 12');
  });
});

describe('fid-table', () => {
  it("lists the paper's FIDs (those of the presets) per checkpoint", () => {
    expect(PAPER_MODELS.map((m) => [m.checkpoint, m.fid])).toEqual([
      ['rar_b', 1.95],
      ['rar_l', 1.7],
      ['rar_xl', 1.5],
      ['rar_xxl', 1.48],
    ]);
    for (const m of PAPER_MODELS) expect(m.fid).toBe(PRESETS[m.preset].fid);
  });

  it('without sample files: the paper column and "not measured"', async () => {
    const dir = join(tmp, 'empty');
    mkdirSync(dir);
    const r = await capture(['fid-table', '--dir', dir]);
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines.find((l) => l.startsWith('model'))).toMatch(/^model\s+params\s+FID \(paper\)\s+FID \(measured\)\s+sFID\s+IS\s+precision\s+recall\s+samples$/);
    for (const [name, params, fid] of [
      ['rar-b', '261M', '1.95'],
      ['rar-l', '461M', '1.70'],
      ['rar-xl', '955M', '1.50'],
      ['rar-xxl', '1.5B', '1.48'],
    ])
      expect(lines.find((l) => l.startsWith(name + ' '))).toMatch(new RegExp(`^${name}\\s+${params}\\s+${fid}\\s+not measured$`));
    expect(r.out).toContain(`rar-b: no rar_b.npz in ${dir}`);

    const j = await capture(['fid-table', '--dir', dir, '--json']);
    const parsed = JSON.parse(j.out);
    expect(parsed.ref).toBeNull();
    expect(parsed.models.map((m: { preset: string; paper: { fid: number }; measured: unknown }) => [m.preset, m.paper.fid, m.measured])).toEqual([
      ['rar-b', 1.95, null],
      ['rar-l', 1.7, null],
      ['rar-xl', 1.5, null],
      ['rar-xxl', 1.48, null],
    ]);
  });

  it('measures present files once, then answers from the cache until a file changes', async () => {
    const dir = join(tmp, 'cache');
    mkdirSync(dir);
    writeFileSync(join(dir, 'rar_b.npz'), 'samples');
    writeFileSync(join(dir, 'rar_xl.npz'), 'samples, xl');
    const ref = join(dir, 'VIRTUAL_imagenet256_labeled.npz');
    writeFileSync(ref, 'reference');
    const calls: string[] = [];
    const evaluate = async (_ref: string, sample: string): Promise<EvaluateResult> => {
      calls.push(sample);
      return { fid: sample.endsWith('rar_b.npz') ? 2.01 : 1.55, sfid: 4, inceptionScore: 300, precision: 0.8, recall: 0.6, referenceImages: 10_000, sampleImages: 50_000, referenceStatsFromFile: true, device: 'cpu' };
    };
    const first = await fidTable({ dir, ref, evaluate });
    expect(calls.map((c) => c.split('/').at(-1))).toEqual(['rar_b.npz', 'rar_xl.npz']);
    expect(first.map((r) => r.measured?.fid ?? null)).toEqual([2.01, null, 1.55, null]);
    expect(first.map((r) => r.cached)).toEqual([false, false, false, false]);
    expect(existsSync(cachePath(dir, PAPER_MODELS[0]!))).toBe(true);
    const text = formatTable(first);
    expect(text).toMatch(/^rar-b\s+261M\s+1\.95\s+2\.01\s+4\.00\s+300\.0\s+0\.800\s+0\.600\s+50000$/m);
    expect(text).toMatch(/^rar-l\s+461M\s+1\.70\s+not measured$/m);

    // again: from the cache, also without --ref
    calls.length = 0;
    const again = await fidTable({ dir, ref, evaluate });
    expect(calls).toEqual([]);
    expect(again.map((r) => r.cached)).toEqual([true, false, true, false]);
    expect(again[0]!.measured).toEqual(first[0]!.measured);
    const cli = await capture(['fid-table', '--dir', dir, '--inception', join(tmp, 'no-such-weights.pth')]);
    expect(cli.code).toBe(0);
    expect(cli.out).toMatch(/^rar-xl\s+955M\s+1\.50\s+1\.55/m);
    expect(cli.out).toContain('rar-b: cached (against VIRTUAL_imagenet256_labeled.npz)');

    // a rewritten sample file (new mtime) is measured again
    const later = new Date(Date.now() + 5000);
    utimesSync(join(dir, 'rar_b.npz'), later, later);
    await fidTable({ dir, ref, evaluate });
    expect(calls.map((c) => c.split('/').at(-1))).toEqual(['rar_b.npz']);
    // ... and through the CLI without Inception weights: a row note and exit 1, the table still printed
    utimesSync(join(dir, 'rar_xl.npz'), later, new Date(Date.now() + 9000));
    const failed = await capture(['fid-table', '--dir', dir, '--inception', join(tmp, 'no-such-weights.pth')]);
    expect(failed.code).toBe(1);
    expect(failed.out).toMatch(/^rar-xl\s+955M\s+1\.50\s+not measured$/m);
    expect(failed.out).toMatch(/rar-xl: not measured: Inception weights not found at .*no-such-weights\.pth/);
    expect(JSON.parse(readFileSync(cachePath(dir, PAPER_MODELS[0]!), 'utf8')).entries).toHaveLength(1);
  });
});
