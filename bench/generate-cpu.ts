// bench/generate-cpu: RAR-B-shaped random weights, batch 2, 256 steps, CFG, on the CPU
// backend (f32 and f16 weight storage), and the full MaskGIT-VQGAN decoder per image,
// each against the PyTorch eager peer (bench/peers/torch_rar.py, Debian python3-torch)
// measured in the same run with the same thread count. Prints one JSON object.
//
//   node dist/bench/generate-cpu.js [--steps 256] [--threads N] [--no-peer]
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { native, packageRoot, type NativeModel, type NativeRarConfig, type NativeVqConfig } from '../lib/native.js';
import { PRESETS, toNativeRarConfig } from '../lib/config.js';
import { randomGeneratorWeights } from '../lib/testing/weights.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '256' },
    threads: { type: 'string', default: String(cpus().length) },
    'no-peer': { type: 'boolean', default: false },
    python: { type: 'string', default: '/usr/bin/python3' },
  },
});
const steps = Number(values.steps);
const threads = Number(values.threads);

// Deterministic pseudo-random weights (normal-ish, std 0.02), filled chunk by chunk.
function randomArray(n: number, seed: number, std = 0.02): Float32Array {
  const a = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    a[i] = ((s / 4294967296) * 2 - 1) * std * 1.732;
  }
  return a;
}

function vqDecoderShapes(c: NativeVqConfig): [string, number[]][] {
  const out: [string, number[]][] = [];
  const mult = c.channelMult;
  const res = (p: string, cin: number, cout: number) => {
    out.push([p + 'norm1.weight', [cin]], [p + 'norm1.bias', [cin]], [p + 'conv1.weight', [cout, cin, 3, 3]],
      [p + 'norm2.weight', [cout]], [p + 'norm2.bias', [cout]], [p + 'conv2.weight', [cout, cout, 3, 3]]);
    if (cin !== cout) out.push([p + 'nin_shortcut.weight', [cout, cout, 1, 1]]);
  };
  let cin = c.hiddenChannels * mult[mult.length - 1];
  out.push(['decoder.conv_in.weight', [cin, c.zChannels, 3, 3]], ['decoder.conv_in.bias', [cin]]);
  res('decoder.mid.0.', cin, cin);
  res('decoder.mid.1.', cin, cin);
  for (let i = mult.length - 1; i >= 0; i--) {
    const cout = c.hiddenChannels * mult[i];
    for (let j = 0; j < c.numResBlocks; j++) {
      res(`decoder.up.${i}.block.${j}.`, cin, cout);
      cin = cout;
    }
    if (i !== 0) out.push([`decoder.up.${i}.upsample_conv.weight`, [cout, cout, 3, 3]], [`decoder.up.${i}.upsample_conv.bias`, [cout]]);
  }
  out.push(['decoder.norm_out.weight', [cin]], ['decoder.norm_out.bias', [cin]],
    ['decoder.conv_out.weight', [3, cin, 3, 3]], ['decoder.conv_out.bias', [3]]);
  return out;
}

function fill(model: NativeModel, shapes: [string, number[]][], onlyPrefix?: string): void {
  const addon = native();
  let seed = 1;
  for (const [name, shape] of shapes) {
    if (onlyPrefix && !name.startsWith(onlyPrefix)) continue;
    const n = shape.reduce((a, b) => a * b, 1);
    const isNormWeight = /norm.*\.weight$/.test(name);
    const data = isNormWeight ? new Float32Array(n).fill(1) : randomArray(n, seed++);
    addon.setWeight(model, name, data, shape);
  }
}

const peerPath = join(packageRoot(), 'bench', 'peers', 'torch_rar.py');
function peer(cfg: object): Record<string, number> | { error: string } {
  if (values['no-peer']) return { error: 'skipped (--no-peer)' };
  const r = spawnSync(values.python!, [peerPath, JSON.stringify({ threads, ...cfg })], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || 'peer failed').trim().split('\n').slice(-1)[0] };
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
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
  const vq: NativeVqConfig = { hiddenChannels: 128, channelMult: [1, 1, 2, 2, 4], numResBlocks: 2, zChannels: 256, codebookSize: 1024, resolution: 256 };
  const vqModel = addon.createVq(vq, 'cpu');
  fill(vqModel, vqDecoderShapes(vq));
  addon.setWeight(vqModel, 'quantize.embedding.weight', randomArray(1024 * 256, 99, 1), [1024, 256]);
  try {
    addon.finalize(vqModel);
  } catch {
    // The encoder weights are not needed to time the decoder; finalize may insist on them.
  }
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
