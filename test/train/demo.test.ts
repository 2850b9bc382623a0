import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEMO_CLASSES,
  DEMO_CODEBOOK_SIZE,
  DEMO_PALETTE,
  DEMO_SEQ_LEN,
  decodeDemoTokens,
  demoClassIndex,
  demoSample,
  drawDemoPicture,
  encodeDemoPicture,
  writeDemoDataset,
} from '../../lib/demo/index.js';
import { Rng } from '../../lib/train/rng.js';
import { TokenDataset } from '../../lib/train/data.js';

describe('demo dataset', () => {
  it('has ten named classes and a 16-colour palette', () => {
    expect(DEMO_CLASSES).toEqual(['circle', 'square', 'triangle', 'cross', 'heart', 'star', 'stripes', 'checker', 'smiley', 'arrow']);
    expect(DEMO_CODEBOOK_SIZE).toBe(16);
    expect(DEMO_PALETTE[8]).toEqual([255, 0, 77]);
    expect(demoClassIndex('Star')).toBe(5);
    expect(demoClassIndex('9')).toBe(9);
    expect(() => demoClassIndex('dog')).toThrow(/circle, square/);
  });

  it('draws deterministic two-colour pictures whose shapes differ by class', () => {
    const a = demoSample(3, 17);
    expect(demoSample(3, 17)).toEqual(a);
    expect(demoSample(3, 18).tokens).not.toEqual(a.tokens);
    for (let cls = 0; cls < 10; cls++) {
      for (let k = 0; k < 20; k++) {
        const t = drawDemoPicture(cls, new Rng(cls * 100 + k));
        expect(t.length).toBe(DEMO_SEQ_LEN);
        const colours = new Set(t);
        expect(colours.size).toBe(2);
        // foreground covers a sensible part of the picture
        const counts = [...colours].map((c) => t.filter((x) => x === c).length);
        expect(Math.min(...counts)).toBeGreaterThan(12);
      }
    }
    // a circle is symmetric left-right about its centre column; stripes are periodic
    const stripes = drawDemoPicture(6, new Rng(1));
    const rowsOrCols = new Set<string>();
    for (let y = 0; y < 16; y++) rowsOrCols.add([...stripes.subarray(y * 16, y * 16 + 16)].join(','));
    expect(rowsOrCols.size).toBeLessThanOrEqual(16);
  });

  it('decodes by palette lookup and nearest upscaling, and encodes back', () => {
    const { tokens } = demoSample(1, 2);
    const img = decodeDemoTokens(tokens, 128);
    expect(img.width).toBe(128);
    // pixel (x=17, y=9) is token (row 1, col 2)
    const t = tokens[1 * 16 + 2]!;
    expect([...img.data.subarray((9 * 128 + 17) * 3, (9 * 128 + 17) * 3 + 3)]).toEqual([...DEMO_PALETTE[t]!]);
    const small = decodeDemoTokens(tokens, 16);
    expect(encodeDemoPicture(small)).toEqual(Uint8Array.from(tokens));
    expect(() => decodeDemoTokens([1, 2], 128)).toThrow(/256 tokens/);
  });

  it('writes the pretokenized JSONL that training reads, with balanced classes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rargen-demo-'));
    try {
      const p = join(dir, 'demo.jsonl');
      await writeDemoDataset(p, 500, 7);
      const lines = readFileSync(p, 'utf8').trim().split('\n');
      expect(lines.length).toBe(500);
      const first = JSON.parse(lines[0]!);
      expect(first.class_id).toBe(demoSample(7, 0).classId);
      expect(first.tokens).toEqual([...demoSample(7, 0).tokens]);
      const ds = new TokenDataset(p, { seqLen: 256, codebookSize: 16, numClasses: 10, bufferSize: 1, shuffle: false, seed: 0 });
      const b = await ds.nextBatch(500);
      ds.close();
      const hist = new Array(10).fill(0);
      b.classIds.forEach((c) => hist[c]++);
      for (const h of hist) expect(h).toBeGreaterThan(30);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
