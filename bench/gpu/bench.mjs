// bench/gpu.sh stage 3: one preset, random generator weights in the given dtype (f32,
// f16, bf16) and an f32 MaskGIT-VQGAN decoder on cuda:0; a warm-up, then per batch:
// rarGenerate (256 steps, CFG, the preset's sampling settings) and vqDecode of its
// tokens, timed separately. One JSON line per batch.
//   node bench/gpu/bench.mjs rar-b 128 bf16     (BENCH_DEVICE=cpu: the dry run's smoke test)
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const addon = require(process.cwd() + '/build/Release/rargen.node');
const [preset, batchesCsv, dtype = 'bf16'] = process.argv.slice(2);
const device = process.env.BENCH_DEVICE || 'cuda'; // 'cpu': smoke test of this script only
const warm = Number(process.env.BENCH_WARMUP || 8);
if (!['f32', 'f16', 'bf16'].includes(dtype)) throw new Error(`bench.mjs: dtype must be f32, f16 or bf16, got ${dtype}`);
const P = {
  tiny: [64, 2, 4, 256, 4.0, 1.0, 1.0],
  'rar-b': [768, 24, 16, 3072, 16.0, 2.75, 1.0],
  'rar-l': [1024, 24, 16, 4096, 15.5, 2.5, 1.02],
  'rar-xl': [1280, 32, 16, 5120, 6.9, 1.5, 1.02],
  'rar-xxl': [1408, 40, 16, 6144, 8.0, 1.2, 1.02],
}[preset];
if (!P) throw new Error(`bench.mjs: unknown preset ${preset}`);
const [C, depth, H, I, g, pw, temp] = P;
const N = 256, V = 1024, K = 1000;
// posEmbedRows / timestepRows: N + lib/config.ts POS_EMBED_EXTRA_ROWS / TIMESTEP_EXTRA_ROWS (plain .mjs: no TS import here)
const cfg = { hiddenSize: C, depth, numHeads: H, mlpDim: I, seqLen: N, codebookSize: V, numClasses: K, posEmbedRows: N + 1024, timestepRows: N + 100 };
// xorshift noise, std 0.02 (LayerNorm weights 1 + noise): finite activations through any depth
let s = 2463534242;
const noise = new Float32Array(1 << 20);
for (let i = 0; i < noise.length; i++) { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; noise[i] = ((s / 4294967296) * 2 - 1) * 0.0346; }
function tensor(shape, one = false) {
  const n = shape.reduce((a, b) => a * b, 1), a = new Float32Array(n);
  for (let i = 0; i < n; i += noise.length) { a.set(noise.subarray(0, Math.min(noise.length, n - i)), i); }
  if (one) for (let i = 0; i < n; i++) a[i] += 1;
  return a;
}
const t0 = performance.now();
const rar = addon.createRar(cfg, device, dtype);
const set = (m, name, shape, one = false) => addon.setWeight(m, name, tensor(shape, one), shape);
// Every generator tensor from the addon's parameter table (src/model/rar_params.cc).
for (const { name, shape, kind } of addon.rarParamTable(cfg)) set(rar, name, shape, kind === 'norm_weight');
addon.finalize(rar);
const vqHidden = preset === 'tiny' ? 32 : 128; // tiny: the dry run's smoke test
const vcfg = { hiddenChannels: vqHidden, channelMult: [1, 1, 2, 2, 4], numResBlocks: 2, zChannels: 256, codebookSize: 1024, resolution: 256 };
const vq = addon.createVq(vcfg, device);
// Every tokenizer tensor from the addon's parameter table (src/model/vqgan_params.cc).
for (const { name, shape, kind } of addon.vqParamTable(vcfg)) set(vq, name, shape, kind === 'norm_weight');
addon.finalize(vq);
const loadS = (performance.now() - t0) / 1000;
const opts = (B) => ({ classIds: Int32Array.from({ length: B }, (_, i) => (i * 7) % K), guidanceScale: g, guidanceScalePow: pw, temperature: temp, topK: 0, topP: 1, greedy: false, seed: '0', indexOffset: 0 });
const w = await addon.rarGenerate(rar, opts(warm)); // warm-up: cuBLASLt plans, kernels, allocator
await addon.vqDecode(vq, w, warm);
for (const B of batchesCsv.split(',').map(Number)) {
  const a = performance.now();
  const tokens = await addon.rarGenerate(rar, opts(B));
  const b = performance.now();
  await addon.vqDecode(vq, tokens, B);
  const c = performance.now();
  const gen = (b - a) / 1000, vqs = (c - b) / 1000;
  console.log(JSON.stringify({ impl: 'rargen', preset, batch: B, dtype, device, gen_s: +gen.toFixed(4), vq_s: +vqs.toFixed(4),
    images_per_s: +(B / (gen + vqs)).toFixed(2), gen_images_per_s: +(B / gen).toFixed(2), load_s: +loadS.toFixed(2) }));
}
addon.free(rar);
addon.free(vq);
