// bench/generate-cpu: RAR-B-shaped random weights, batch 2, 256 steps, CFG, on the CPU
// backend (f32 and f16 weight storage), and the full MaskGIT-VQGAN decoder per image,
// each against the PyTorch eager peer (bench/peers/torch_rar.py, Debian python3-torch)
// measured in the same run with the same thread count. Prints one JSON object.
//
//   node dist/bench/generate-cpu.js [--steps 256] [--threads N] [--no-peer]
import { cpus } from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs, runPeer } from './_util.js';
import { native, type NativeRarConfig, type NativeVqConfig } from '../lib/native.js';
import { MASKGIT_VQGAN, PRESETS, toNativeRarConfig, toNativeVqConfig } from '../lib/config.js';
import { randomGeneratorWeights, randomTokenizerWeights } from '../lib/testing/weights.js';

const { values, num } = benchArgs({ steps: '256', threads: String(cpus().length), 'no-peer': false, python: '/usr/bin/python3' });
const steps = num('steps');
const threads = num('threads');

function peer(cfg: object): Record<string, number> | { error: string } {
  if (values['no-peer']) return { error: 'skipped (--no-peer)' };
  return runPeer(values.python, 'torch_rar.py', [JSON.stringify({ threads, ...cfg })]) as Record<string, number> | { error: string };
}

async function main() {
  const addon = native();
  const rarB: NativeRarConfig = toNativeRarConfig(PRESETS['rar-b'].generator);
  const result: Record<string, unknown> = {
    bench: 'generate-cpu', date: new Date().toISOString(), threads, cpu: cpus()[0]?.model, steps, batch: 2, cfg: true,
    build: addon.buildInfo(),
  };
  const classIds = Int32Array.from([207, 360]);
  for (const dtype of ['f32', 'f16'] as const) {
    const model = addon.createRar(rarB, 'cpu', dtype);
    for (const [name, data, shape] of randomGeneratorWeights(rarB, 1)) addon.setWeight(model, name, data, shape);
    addon.finalize(model);
    // Warm-up: a short run would need a different seqLen; run the full thing once untimed only when steps are few.
    const t0 = process.hrtime.bigint();
    await addon.rarGenerate(model, { classIds, guidanceScale: 16, guidanceScalePow: 2.75, temperature: 1, topK: 0, topP: 1, greedy: false, seed: '0', indexOffset: 0 });
    const sec = Number(process.hrtime.bigint() - t0) / 1e9;
    result[`rargen_${dtype}`] = { seconds: sec, ms_per_step: (1000 * sec) / 256 };
    addon.free(model);
  }
  const p = peer({ mode: 'generate', steps, preset: 'rar-b', classes: [207, 360] });
  result.peer_generate = p;
  if ('ms_per_step' in p) {
    for (const dtype of ['f32', 'f16']) {
      const r = result[`rargen_${dtype}`] as { ms_per_step: number };
      result[`speedup_${dtype}`] = p.ms_per_step / r.ms_per_step;
    }
  }
  // VQ decoder, per image (batch 1), the released tokenizer's shape.
  const vq: NativeVqConfig = toNativeVqConfig(MASKGIT_VQGAN);
  const vqModel = addon.createVq(vq, 'cpu');
  for (const [name, data, shape] of randomTokenizerWeights(vq, 2)) addon.setWeight(vqModel, name, data, shape);
  addon.finalize(vqModel);
  const tokens = Int32Array.from({ length: 256 }, (_, i) => (i * 37) % 1024);
  await addon.vqDecode(vqModel, tokens, 1); // warm-up
  const reps = 2;
  const t1 = process.hrtime.bigint();
  for (let i = 0; i < reps; i++) await addon.vqDecode(vqModel, tokens, 1);
  const vqSec = Number(process.hrtime.bigint() - t1) / 1e9 / reps;
  result.rargen_vqdecode = { seconds_per_image: vqSec };
  const pv = peer({ mode: 'vqdecode', batch: 1, reps });
  result.peer_vqdecode = pv;
  if ('seconds_per_image' in pv) result.speedup_vqdecode = pv.seconds_per_image / vqSec;
  addon.free(vqModel);
  console.log(JSON.stringify(result, null, 2));
}

void dirname(fileURLToPath(import.meta.url));
main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
