// bench/session-cpu: continuous batching (the native decode session) vs one generate()
// per image and vs one batch, on a RAR-B-width model with fewer blocks (C 768, 16 heads,
// MLP 3072, N 256; --depth 4 by default), random weights, CFG (g 16, pow 2.75), CPU.
// 16 sequences: sequential = 16 rarGenerate calls of one image; batch = one call of 16;
// session = admitted one every --stagger steps, stepped until all are done. Checks that
// the session's tokens equal the sequential ones. Prints one JSON object.
//
//   node dist/bench/session-cpu.js [--depth 4] [--images 16] [--stagger 8] [--dtype f32]
import { cpus } from 'node:os';
import { benchArgs } from './_util.js';
import { native, type NativeRarConfig } from '../lib/native.js';
import { PRESETS, toNativeRarConfig } from '../lib/config.js';
import { randomGeneratorWeights } from '../lib/testing/weights.js';

const { values, num } = benchArgs({ depth: '4', images: '16', stagger: '8', dtype: 'f32' });
const depth = num('depth');
const images = num('images');
const stagger = num('stagger');
const dtype = values.dtype as 'f32' | 'f16' | 'bf16';

async function main() {
  const addon = native();
  const cfg: NativeRarConfig = { ...toNativeRarConfig(PRESETS['rar-b'].generator), depth };
  const model = addon.createRar(cfg, 'cpu', dtype);
  for (const [name, data, shape] of randomGeneratorWeights(cfg, 1)) addon.setWeight(model, name, data, shape);
  addon.finalize(model);
  const opts = { guidanceScale: 16, guidanceScalePow: 2.75, temperature: 1, topK: 0, topP: 1, greedy: false, seed: '0' };
  const classes = Array.from({ length: images }, (_, i) => (i * 37) % cfg.numClasses);
  const now = () => Number(process.hrtime.bigint()) / 1e9;

  let t = now();
  const sequential: Int32Array[] = [];
  for (let i = 0; i < images; i++)
    sequential.push(await addon.rarGenerate(model, { ...opts, classIds: Int32Array.from([classes[i]!]), indexOffset: i }));
  const tSeq = now() - t;

  t = now();
  await addon.rarGenerate(model, { ...opts, classIds: Int32Array.from(classes), indexOffset: 0 });
  const tBatch = now() - t;

  const session = addon.sessionCreate(model, 2 * images);
  t = now();
  const ids: number[] = [];
  const got = new Map<number, Int32Array>();
  let steps = 0;
  while (got.size < images) {
    if (ids.length < images && steps % stagger === 0)
      ids.push(addon.sessionAdd(session, { ...opts, classId: classes[ids.length]!, index: ids.length }));
    for (const f of (await addon.sessionStep(session)).finished) got.set(f.id, f.tokens);
    steps++;
  }
  const tSession = now() - t;
  addon.sessionDispose(session);
  addon.free(model);
  const exact = ids.every((id, i) => got.get(id)!.every((v, k) => v === sequential[i]![k]));

  console.log(
    JSON.stringify({
      bench: 'session-cpu', date: new Date().toISOString(), cpu: cpus()[0]?.model, threads: cpus().length, dtype,
      model: { hidden: cfg.hiddenSize, depth, heads: cfg.numHeads, mlp: cfg.mlpDim, seqLen: cfg.seqLen }, images, stagger,
      sequential_img_s: images / tSeq, batch_img_s: images / tBatch, session_img_s: images / tSession, session_steps: steps,
      session_tokens_equal_sequential: exact,
    }),
  );
  if (!exact) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
