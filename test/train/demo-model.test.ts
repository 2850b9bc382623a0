// The shipped demo model (demo/rar-demo.bin + demo/demo.json, made by `npm run
// train:demo`): it loads into the inference model and its samples look like demo
// pictures (palette tokens, a dominant background colour, a foreground).
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { native } from '../../lib/native.js';
import { toNativeRarConfig, GeneratorConfigSchema } from '../../lib/config.js';
import { demoPaths, loadDemoInfo, DEMO_CLASSES, DEMO_CODEBOOK_SIZE, DEMO_SEQ_LEN, decodeDemoTokens } from '../../lib/demo/index.js';
import { readGeneratorWeights } from '../../lib/train/loop.js';

const paths = demoPaths();
const shipped = existsSync(paths.weights) && existsSync(paths.info);

describe.skipIf(!shipped)('shipped demo model', () => {
  it('describes itself and samples demo-like pictures for every class', async () => {
    const info = loadDemoInfo();
    expect(info.classes).toEqual([...DEMO_CLASSES]);
    const cfg = GeneratorConfigSchema.parse(info.generator);
    expect(cfg.codebookSize).toBe(DEMO_CODEBOOK_SIZE);
    expect(cfg.seqLen).toBe(DEMO_SEQ_LEN);
    const a = native();
    const m = a.createRar(toNativeRarConfig(cfg), 'cpu', 'f32');
    try {
      for (const [n, t] of await readGeneratorWeights(paths.weights, cfg)) a.setWeight(m, n, t.data, t.shape);
      a.finalize(m);
      const classIds = Int32Array.from({ length: 10 }, (_, i) => i);
      const toks = await a.rarGenerate(m, {
        classIds, guidanceScale: info.sampling.guidanceScale, guidanceScalePow: info.sampling.guidanceScalePow,
        temperature: info.sampling.temperature, topK: 0, topP: 1, greedy: false, seed: '1', indexOffset: 0,
      });
      for (let i = 0; i < 10; i++) {
        const t = toks.subarray(i * DEMO_SEQ_LEN, (i + 1) * DEMO_SEQ_LEN);
        const counts = new Array(DEMO_CODEBOOK_SIZE).fill(0);
        t.forEach((x) => counts[x]++);
        const sorted = [...counts].sort((x, y) => y - x);
        expect(sorted[0]! / DEMO_SEQ_LEN, `class ${DEMO_CLASSES[i]} background share`).toBeGreaterThan(0.25);
        expect(decodeDemoTokens(t, 64).width).toBe(64);
      }
    } finally {
      a.free(m);
    }
  });
});
