// Quick timing of the native CPU backend (no PyTorch peer; see bench/generate-cpu.ts
// for the comparison): RAR-B-shaped random weights, batch 2 with CFG (4 rows), all
// 256 steps, f16 and f32 weight storage; then the full MaskGIT-VQGAN decoder on one
// 256x256 image. Usage: node bench/native-smoke.mjs [f16,f32] [--no-vq]
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addon = createRequire(import.meta.url)('node-gyp-build')(root);
const dtypes = (process.argv[2] && !process.argv[2].startsWith("--") ? process.argv[2] : "f16,f32").split(",").filter((d) => d !== "none");
const noVq = process.argv.includes('--no-vq');

// Norm scales 1, everything else uniform noise (std 0.02, biases 0.1) over the
// addon's parameter table (src/model/rar_params.cc): no state dict written out here.
function fillRandom(model, table, seed) {
  let s = seed >>> 0 || 1;
  for (const { name, shape, kind } of table) {
    const n = shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    const std = kind === 'norm_weight' ? 0 : 0.02;
    for (let i = 0; i < n; i++) {
      s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
      a[i] = (std === 0 ? 1 : 0) + ((s / 4294967296) * 2 - 1) * (std || 0.1);
    }
    addon.setWeight(model, name, a, shape);
  }
  addon.finalize(model);
}

// RAR-B (lib/config.ts PRESETS; 1024 and 100: lib/config.ts POS_EMBED_EXTRA_ROWS / TIMESTEP_EXTRA_ROWS).
const C = 768, I = 3072, depth = 24, H = 16, N = 256, V = 1024, K = 1000;
const rarCfg = { hiddenSize: C, depth, numHeads: H, mlpDim: I, seqLen: N, codebookSize: V, numClasses: K,
  posEmbedRows: N + 1024, timestepRows: N + 100 };

console.log('build', JSON.stringify(addon.buildInfo()));
for (const dtype of dtypes) {
  const m = addon.createRar(rarCfg, 'cpu', dtype);
  fillRandom(m, addon.rarParamTable(rarCfg), 7);
  const t0 = process.hrtime.bigint();
  let first = 0n;
  await addon.rarGenerate(m, { classIds: Int32Array.from([207, 360]), guidanceScale: 16, guidanceScalePow: 2.75,
    temperature: 1, topK: 0, topP: 1, greedy: false, seed: '0', indexOffset: 0,
    onProgress: (d) => { if (d === 1) first = process.hrtime.bigint(); } });
  const sec = Number(process.hrtime.bigint() - t0) / 1e9;
  const firstMs = Number(first - t0) / 1e6;
  console.log(`RAR-B ${dtype}: batch 2 + CFG, ${N} steps: ${sec.toFixed(2)} s, ${(1000 * sec / N).toFixed(1)} ms/step (first step incl. adaLN chunk ${firstMs.toFixed(0)} ms)`);
  addon.free(m);
}

if (!noVq) {
  const hidden = 128, mult = [1, 1, 2, 2, 4], z = 256;
  const vqCfg = { hiddenChannels: hidden, channelMult: mult, numResBlocks: 2, zChannels: z, codebookSize: 1024, resolution: 256 };
  const vq = addon.createVq(vqCfg, 'cpu');
  // Decoder and codebook from the addon's table (src/model/vqgan_params.cc): the encoder is not needed to decode.
  let s = 3;
  for (const { name, shape } of addon.vqParamTable(vqCfg)) {
    if (name.startsWith('encoder.')) continue;
    const n = shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; a[i] = ((s / 4294967296) * 2 - 1) * 0.05; }
    addon.setWeight(vq, name, a, shape);
  }
  const tokens = Int32Array.from({ length: 256 }, (_, i) => (i * 37) % 1024);
  await addon.vqDecode(vq, tokens, 1);
  const reps = 3;
  const t1 = process.hrtime.bigint();
  for (let i = 0; i < reps; i++) await addon.vqDecode(vq, tokens, 1);
  console.log(`VQGAN decoder (MaskGIT, 256x256): ${(Number(process.hrtime.bigint() - t1) / 1e9 / reps).toFixed(3)} s/image`);
  addon.free(vq);
}
