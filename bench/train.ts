// bench/train: RAR training throughput on the CPU backend (forward + backward + clipped
// AdamW, fp32) against the PyTorch eager peer (bench/peers/torch_train.py, Debian
// python3-torch) measured in the same run with the same sizes, batch and thread count.
// Prints one JSON object. Default sizes: the shipped demo model (demo/train.yaml:
// C=128, depth 4, 4 heads, MLP 512, N=256 tokens, V=16, K=10), batch 16.
//
//   node dist/bench/train.js [--hidden 128 --depth 4 --heads 4 --mlp 512 --seq-len 256
//                             --vocab 16 --classes 10 --batch 16 --steps 5 --warmup 2]
//                            [--threads N] [--no-peer] [--python /usr/bin/python3]
import { cpus, loadavg } from 'node:os';
import { benchArgs, RAR_SHAPE_OPTIONS, rarShape, runPeer } from './_util.js';
import { GeneratorConfigSchema, positionRows } from '../lib/config.js';
import { Trainer } from '../lib/train/native.js';
import { initGeneratorWeights } from '../lib/train/init.js';
import { stepRandomness } from '../lib/train/data.js';
import { Rng } from '../lib/train/rng.js';

const { values, num: n } = benchArgs({
  ...RAR_SHAPE_OPTIONS,
  batch: '16',
  steps: '5',
  warmup: '2',
  dropout: '0.1',
  threads: String(cpus().length),
  'no-peer': false,
  python: '/usr/bin/python3',
});
const [C, L, H, I, N, V, K, B] = rarShape(n);
const steps = n('steps');
const warmup = n('warmup');
const dropout = n('dropout');

const cfg = GeneratorConfigSchema.parse({
  hiddenSize: C, depth: L, numHeads: H, headDim: C / H, mlpDim: I, seqLen: N, codebookSize: V, numClasses: K,
  ...positionRows(N),
});

async function rargen() {
  const t = new Trainer(cfg, 'cpu', { dropout, attnDropout: dropout });
  try {
    for (const [name, w] of initGeneratorWeights(cfg, 0)) t.setTensor('param', name, w.data, w.shape);
    const rng = new Rng(1);
    const times: number[] = [];
    let loss = 0;
    for (let s = 0; s < warmup + steps; s++) {
      const ids = Int32Array.from({ length: B * N }, () => rng.nextInt(V));
      const cls = Int32Array.from({ length: B }, () => rng.nextInt(K));
      const r = stepRandomness({ seed: 0, seqLen: N, codebookSize: V, numClasses: K, randomRatio: 1, classLabelDropout: 0.1 }, s, cls);
      const t0 = performance.now();
      const res = await t.forwardBackward({ ids, condition: r.condition, orders: r.orders, dropoutSeed: r.dropoutSeed, lossScale: 1, zeroGrad: true });
      await t.optimizerStep({ lr: 1e-4, beta1: 0.9, beta2: 0.96, eps: 1e-8, weightDecay: 0.03, maxGradNorm: 1, step: s + 1 });
      const dt = (performance.now() - t0) / 1000;
      if (s >= warmup) times.push(dt);
      loss = res.loss;
    }
    times.sort((a, b) => a - b);
    const med = times[Math.floor(times.length / 2)]!;
    return { impl: 'rargen-cpu', params: t.info.numParams, step_s_median: med, step_s_min: times[0], tokens_per_s: (B * N) / med, loss_last: loss };
  } finally {
    t.free();
  }
}

function peer() {
  const arg = JSON.stringify({ hidden: C, depth: L, heads: H, mlp: I, seq_len: N, vocab: V, classes: K, batch: B, steps, warmup, threads: n('threads'), dropout });
  return runPeer(values.python, 'torch_train.py', [arg], { errorLines: 3 });
}

const load0 = loadavg()[0];
const ours = await rargen();
const theirs = values['no-peer'] ? null : peer();
const result = {
  bench: 'train',
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, model: cpus()[0]?.model, loadavg_1m_before: load0, loadavg_1m_after: loadavg()[0] },
  config: { hidden: C, depth: L, heads: H, mlp: I, seq_len: N, vocab: V, classes: K, batch: B, steps, warmup, dropout, threads: n('threads') },
  rargen: ours,
  pytorch: theirs,
  speedup: theirs && 'tokens_per_s' in theirs ? ours.tokens_per_s / (theirs.tokens_per_s as number) : null,
};
process.stdout.write(JSON.stringify(result, null, 2) + '\n');
