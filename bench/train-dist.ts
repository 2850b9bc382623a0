// bench/train-dist: data-parallel CPU training over MPI on this machine. The same
// global batch (2B) as 2 ranks x 1 thread x batch B (mpirun -np 2, RARGEN_THREADS=1)
// and as 1 process x 2 threads x batch 2B; per step: forward+backward, the gradient
// all-reduce (trainAllreduceGrads: the flat buffer averaged over the ranks with MPI,
// lib/dist.ts) and AdamW, timed apart. Then MPI all-reduce times for a few buffer
// sizes (the bus bandwidth 2(N-1)/N x bytes / time, as nccl-tests define it). Prints one
// JSON object. Needs Open MPI's mpirun (apt-get install openmpi-bin); as root set
// OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1.
//
//   node dist/bench/train-dist.js [--hidden 128 --depth 4 --heads 4 --mlp 512 --seq-len 256
//                                  --vocab 16 --classes 10 --batch 8 --steps 8 --warmup 2]
//                                 [--ranks 2] [--sizes-mb 1,16,64]
import { spawnSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { GeneratorConfigSchema, positionRows } from '../lib/config.js';
import { Trainer } from '../lib/train/native.js';
import { initGeneratorWeights } from '../lib/train/init.js';
import { shardRandomness } from '../lib/train/data.js';
import { Rng } from '../lib/train/rng.js';
import { Dist } from '../lib/dist.js';
import { benchArgs, RAR_SHAPE_OPTIONS, rarShape } from './_util.js';

const { values, num: n, nums } = benchArgs({
  ...RAR_SHAPE_OPTIONS,
  batch: '8',
  steps: '8',
  warmup: '2',
  ranks: '2',
  'sizes-mb': '1,16,64',
  child: false,
});
const [C, L, H, I, N, V, K, B] = rarShape(n);
const [steps, warmup, ranks] = [n('steps'), n('warmup'), n('ranks')];
const sizesMB = nums('sizes-mb');
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

/** One rank (or the single process): timed steps, then (under MPI) all-reduce sizes. */
async function child(): Promise<void> {
  const dist = Dist.fromEnv();
  const cfg = GeneratorConfigSchema.parse({ hiddenSize: C, depth: L, numHeads: H, headDim: C / H, mlpDim: I, seqLen: N, codebookSize: V, numClasses: K, ...positionRows(N) });
  const t = new Trainer(cfg, 'cpu', { dropout: 0, attnDropout: 0 });
  const fb: number[] = [];
  const ar: number[] = [];
  const opt: number[] = [];
  const step: number[] = [];
  try {
    for (const [name, w] of initGeneratorWeights(cfg, 0)) t.setTensor('param', name, w.data, w.shape);
    const rng = new Rng(1 + dist.rank);
    for (let s = 0; s < warmup + steps; s++) {
      const ids = Int32Array.from({ length: B * N }, () => rng.nextInt(V));
      const cls = Int32Array.from({ length: B }, () => rng.nextInt(K));
      const r = shardRandomness({ seed: 0, seqLen: N, codebookSize: V, numClasses: K, randomRatio: 1, classLabelDropout: 0.1 }, s, cls, { rank: dist.rank, size: dist.size, accum: 1, micro: 0 });
      if (dist.size > 1) dist.barrier(); // every rank starts the step together: the all-reduce then measures itself, not the ranks' skew
      const t0 = performance.now();
      await t.forwardBackward({ ids, condition: r.condition, orders: r.orders, dropoutSeed: r.dropoutSeed, lossScale: 1, zeroGrad: true });
      const t1 = performance.now();
      if (dist.size > 1) t.allreduceGrads();
      const t2 = performance.now();
      await t.optimizerStep({ lr: 1e-4, beta1: 0.9, beta2: 0.96, eps: 1e-8, weightDecay: 0.03, maxGradNorm: 1, step: s + 1 });
      const t3 = performance.now();
      if (s >= warmup) {
        fb.push((t1 - t0) / 1000);
        ar.push((t2 - t1) / 1000);
        opt.push((t3 - t2) / 1000);
        step.push((t3 - t0) / 1000);
      }
    }
    const params = t.info.numParams;
    const sizes: { mb: number; seconds: number; bus_gb_per_s: number }[] = [];
    if (dist.size > 1)
      for (const mb of sizesMB) {
        const buf = new Float64Array((mb * 2 ** 20) / 8);
        const times: number[] = [];
        for (let i = 0; i < 4; i++) {
          dist.barrier();
          const t0 = performance.now();
          dist.allreduce(buf);
          times.push((performance.now() - t0) / 1000);
        }
        const sec = median(times.slice(1));
        sizes.push({ mb, seconds: sec, bus_gb_per_s: (((2 * (dist.size - 1)) / dist.size) * mb * 2 ** 20) / sec / 1e9 });
      }
    if (dist.isRoot)
      process.stdout.write(
        JSON.stringify({
          ranks: dist.size,
          threads: Number(process.env.RARGEN_THREADS ?? cpus().length),
          batch_per_rank: B,
          global_batch: B * dist.size,
          params,
          gradient_bytes: params * 4,
          step_s_median: median(step),
          forward_backward_s_median: median(fb),
          allreduce_s_median: median(ar),
          optimizer_s_median: median(opt),
          allreduce_fraction: median(ar) / median(step),
          samples_per_s: (B * dist.size) / median(step),
          allreduce_sizes: sizes,
        }) + '\n',
      );
  } finally {
    t.free();
  }
  dist.finalize();
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Record<string, unknown> {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 24 });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || 'failed').trim().split('\n').slice(-4).join(' ') };
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

if (values.child) await child();
else {
  const script = process.argv[1]!;
  const common = ['--hidden', String(C), '--depth', String(L), '--heads', String(H), '--mlp', String(I), '--seq-len', String(N), '--vocab', String(V), '--classes', String(K), '--steps', String(steps), '--warmup', String(warmup), '--sizes-mb', sizesMB.join(','), '--child'];
  if (spawnSync('mpirun', ['--version']).status !== 0) throw new Error('bench/train-dist needs Open MPI (apt-get install openmpi-bin libopenmpi-dev)');
  const load0 = loadavg()[0];
  const mpi = run('mpirun', ['--oversubscribe', '--bind-to', 'none', '-x', 'RARGEN_THREADS=1', '-np', String(ranks), process.execPath, script, ...common, '--batch', String(B)], { RARGEN_THREADS: '1' });
  const one = run(process.execPath, [script, ...common, '--batch', String(B * ranks)], { RARGEN_THREADS: String(ranks) });
  const sps = (x: Record<string, unknown>) => (typeof x.samples_per_s === 'number' ? x.samples_per_s : NaN);
  process.stdout.write(
    JSON.stringify(
      {
        bench: 'train-dist',
        date: new Date().toISOString(),
        machine: { cpus: cpus().length, model: cpus()[0]?.model, loadavg_1m_before: load0, loadavg_1m_after: loadavg()[0] },
        config: { hidden: C, depth: L, heads: H, mlp: I, seq_len: N, vocab: V, classes: K, global_batch: B * ranks, steps, warmup },
        [`ranks${ranks}_threads1`]: mpi,
        [`ranks1_threads${ranks}`]: one,
        mpi_over_threads_speed: sps(mpi) / sps(one),
      },
      null,
      2,
    ) + '\n',
  );
}
