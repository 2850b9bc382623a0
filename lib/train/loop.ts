// The training loop: config -> native trainer -> data stream -> optimizer steps,
// with logging, periodic atomic checkpoints and exact resumption.
//
// One optimizer step s (0-based) is: gradient_accumulation_steps micro-batches of
// per_gpu_batch_size samples from the data stream; for micro-batch u the randomness
// (orders with probability r(s), label drops, the dropout seed) is this rank's slice
// of the randomness of step s's whole global batch (shardRandomness in data.ts);
// forward+backward accumulate the gradient of the mean loss; under mpirun the
// gradients are averaged over the ranks (lib/dist.ts); then the global grad
// norm is clipped and AdamW runs with lr(s). Everything a step depends on is
// (weights, moments, every rank's data position, seed, s), all of which a checkpoint
// holds, so a resumed run continues bit for bit.
import { openCheckpoint } from '../io/index.js';
import { validateGeneratorWeights, describeGeneratorConfig, type GeneratorConfig } from '../config.js';
import { ProgressBar, formatDuration } from '../progress.js';
import { checkpointDirName, latestCheckpoint, loadCheckpoint, saveCheckpoint, writeTextAtomic, type NamedTensor } from './checkpoint.js';
import { generatorConfigOf, toYaml, type TrainConfig } from './config.js';
import { TokenDataset, shardRandomness } from './data.js';
import { Dist, tensorChecksum } from '../dist.js';
import { readFileSync, statSync } from 'node:fs';
import { packageRoot } from '../native.js';
import { initGeneratorWeights } from './init.js';
import { Trainer } from './native.js';
import { lrAt, lrScheduleOf, randomRatioAt, randomnessScheduleOf } from './schedule.js';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveDevice, type DeviceSpec } from '../device.js';

export interface StepLog {
  /** Optimizer steps done after this one (1-based, like the official global_step). */
  step: number;
  loss: number;
  accuracy: number;
  /** The learning rate this step used. */
  lr: number;
  /** Global gradient norm before clipping. */
  grad_norm: number;
  random_ratio: number;
  epoch: number;
  samples_per_s: number;
}

export interface TrainRunOptions {
  config: TrainConfig;
  /** Device: 'auto', 'cpu', 'cuda' or 'cuda:N' (as everywhere in rargen). */
  device: DeviceSpec;
  /** Initial weights (a generator state dict) when not resuming. */
  init?: string | null;
  shuffle?: boolean;
  /** JSON lines log: one object per optimizer step. */
  logJsonl?: string | null;
  /** Stop after this many optimizer steps in this call (tests; default: until max_train_steps). */
  stepsThisRun?: number;
  /** Progress bar on stderr (default: when stderr is a TTY). */
  progress?: boolean;
  /** Status lines (default: stderr). */
  print?: (line: string) => void;
  onStep?: (log: StepLog) => void;
  /** Set to true (e.g. on SIGINT) to save and stop after the current step. */
  stopSignal?: { stop: boolean };
  /** Aborting it saves and stops after the current step, as stopSignal does. */
  signal?: AbortSignal;
  /** The process group (default: Dist.fromEnv(), i.e. MPI ranks under mpirun, else one process). */
  dist?: Dist;
  /** Check after every step that all ranks hold identical parameters (default: env RARGEN_DIST_CHECKSUM=1). */
  checksum?: boolean;
}

export interface TrainRunResult {
  startStep: number;
  endStep: number;
  lastLog: StepLog | null;
  lastCheckpoint: string | null;
  resumedFrom: string | null;
}

/** Loads a generator state dict file into a name -> tensor map, checked against the config. */
export async function readGeneratorWeights(path: string, cfg: GeneratorConfig): Promise<Map<string, NamedTensor>> {
  const ck = await openCheckpoint(path);
  try {
    validateGeneratorWeights(ck.tensors, cfg);
    const out = new Map<string, NamedTensor>();
    for (const [name, info] of ck.tensors) out.set(name, { shape: [...info.shape], data: await ck.readFloat32(name) });
    return out;
  } finally {
    await ck.close();
  }
}

/** The parameters of a trainer as a state dict (for checkpoints). */
export function trainerParams(t: Trainer, kind: 'param' | 'exp_avg' | 'exp_avg_sq' | 'grad' = 'param'): Map<string, NamedTensor> {
  const out = new Map<string, NamedTensor>();
  t.info.names.forEach((n, i) => out.set(n, { shape: t.info.shapes[i]!, data: t.getTensor(kind, n) }));
  return out;
}

export async function runTraining(o: TrainRunOptions): Promise<TrainRunResult> {
  if (o.dist) return trainOn(o, o.dist);
  const dist = Dist.fromEnv();
  const res = await trainOn(o, dist);
  // Only after a clean end: a rank that throws exits without finalizing, and mpirun
  // then stops the others.
  dist.finalize();
  return res;
}

function rargenVersion(): string {
  return JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
}

async function trainOn(o: TrainRunOptions, dist: Dist): Promise<TrainRunResult> {
  const c = o.config;
  const world = dist.size;
  const rank = dist.rank;
  // Rank 0 alone prints, logs and writes files.
  const print = !dist.isRoot ? () => {} : (o.print ?? ((l: string) => process.stderr.write(l + '\n')));
  const checksum = o.checksum ?? process.env.RARGEN_DIST_CHECKSUM === '1';
  const gcfg = generatorConfigOf(c);
  const g = c.model.generator;
  const seed = c.training.seed;
  const outDir = c.experiment.output_dir;
  const B = c.training.per_gpu_batch_size;
  const accum = c.training.gradient_accumulation_steps;
  const maxSteps = c.training.max_train_steps;
  const dataPath = c.dataset.params.pretokenization;
  if (!dataPath) throw new Error('dataset.params.pretokenization must name the pretokenized JSON-lines file to train on');

  // one GPU per rank: cuda:$LOCAL_RANK (lib/dist.ts rankDevice)
  const trainer = new Trainer(gcfg, resolveDevice(dist.device(o.device)).device, { dropout: g.dropout, attnDropout: g.attn_drop });
  try {
    await mkdir(outDir, { recursive: true });
    const data = new TokenDataset(dataPath, {
      seqLen: gcfg.seqLen,
      codebookSize: gcfg.codebookSize,
      numClasses: gcfg.numClasses,
      bufferSize: c.dataset.params.shuffle_buffer_size,
      shuffle: o.shuffle ?? true,
      seed,
      rank,
      worldSize: world,
    });
    // Every rank must run the same job (a mismatch would silently train garbage).
    dist.checkSame({
      config: JSON.parse(JSON.stringify(c)) as unknown, // compared leaf by leaf: the message names the key
      version: rargenVersion(),
      parameters: trainer.info.numParams,
      dataBytes: statSync(dataPath).size,
      shuffle: String(o.shuffle ?? true),
      init: String(o.init ?? c.experiment.init_weight ?? ''),
      device: trainer.info.device.startsWith('cuda') ? 'cuda' : 'cpu', // NCCL on GPUs, MPI on CPUs: all ranks alike
    }, 'the training run');

    // Start: resume, or initial weights.
    let startStep = 0;
    let adamStep = 0;
    let resumedFrom: string | null = null;
    const latest = c.experiment.resume ? await latestCheckpoint(outDir) : null;
    if (latest) {
      const ck = await loadCheckpoint(latest);
      for (const [n, t] of ck.params) trainer.setTensor('param', n, t.data, t.shape);
      for (const [n, t] of ck.expAvg) trainer.setTensor('exp_avg', n, t.data, t.shape);
      for (const [n, t] of ck.expAvgSq) trainer.setTensor('exp_avg_sq', n, t.data, t.shape);
      startStep = ck.state.step;
      adamStep = ck.state.adamStep;
      if (ck.state.seed !== seed) throw new Error(`cannot resume ${latest}: it was trained with training.seed=${ck.state.seed}, this run has ${seed}`);
      const savedWorld = ck.state.worldSize ?? 1;
      if (savedWorld !== world)
        throw new Error(`cannot resume ${latest} exactly: it was trained on ${savedWorld} rank(s), this run has ${world}; launch with mpirun -np ${savedWorld}` + (savedWorld === 1 ? ' (or without mpirun)' : ''));
      const myData = rank === 0 ? ck.state.data : (ck.state.dataRanks?.[rank] ?? null);
      if (myData) await data.restore(myData);
      resumedFrom = latest;
      print(`rargen train: resumed from ${latest} (step ${startStep}, epoch ${data.epoch})`);
    } else {
      const initPath = o.init ?? c.experiment.init_weight;
      const weights = initPath ? await readGeneratorWeights(initPath, gcfg) : initGeneratorWeights(gcfg, seed);
      for (const [n, t] of weights) trainer.setTensor('param', n, t.data, t.shape);
      print(`rargen train: ${initPath ? `initial weights from ${initPath}` : `fresh weights (seed ${seed})`}`);
    }
    print(
      `rargen train: ${describeGeneratorConfig(gcfg)}; ${(trainer.info.numParams / 1e6).toFixed(2)}M parameters on ${trainer.info.device}; ` +
        `batch ${B}${world > 1 ? ` x ${world} ranks` : ''}${accum > 1 ? ` x ${accum} accumulation` : ''}` +
        `${world > 1 || accum > 1 ? ` = ${B * world * accum} per step` : ''}; steps ${startStep} -> ${maxSteps}; data ${dataPath}`,
    );
    if (c.training.mixed_precision !== 'no')
      print(`rargen train: training.mixed_precision=${c.training.mixed_precision} is not implemented yet; training in float32`);
    if (c.training.use_ema) print('rargen train: training.use_ema=true is not implemented; no EMA weights are kept');
    if (dist.isRoot) await writeTextAtomic(join(outDir, 'config.yaml'), toYaml(c));

    const lrs = lrScheduleOf(c);
    if (lrs.optimizerLr !== lrs.baseLr)
      print(
        `rargen train: optimizer.params.learning_rate ${lrs.optimizerLr} differs from lr_scheduler.params.learning_rate ${lrs.baseLr}: ` +
          `as in the official trainer the lr is the former times the schedule's factor (peak ${lrs.optimizerLr}` +
          `${lrs.scheduler === 'cosine' ? `, end ${(lrs.optimizerLr * lrs.endLr) / lrs.baseLr}` : ''})`,
      );
    const rs = randomnessScheduleOf(c);
    const opt = c.optimizer.params;
    const log: WriteStream | null = o.logJsonl && dist.isRoot ? createWriteStream(o.logJsonl, { flags: startStep > 0 ? 'a' : 'w' }) : null;
    const endStep = Math.min(maxSteps, o.stepsThisRun !== undefined ? startStep + o.stepsThisRun : maxSteps);
    const showBar = o.progress ?? Boolean(process.stderr.isTTY);
    // no TTY and no explicit progress: plain progress lines at least every 10 s
    const bar = new ProgressBar(maxSteps, { label: 'train', unit: 'step', enabled: !dist.isRoot ? false : o.progress === undefined && !showBar ? undefined : showBar });
    const t0 = performance.now();
    let lastLog: StepLog | null = null;
    let lastCheckpoint: string | null = null;

    // Collective: every rank calls it; rank 0 writes (with every rank's data position).
    const save = async (stepsDone: number): Promise<string | null> => {
      const dataRanks = world > 1 ? dist.allgather(JSON.stringify(data.state())).map((x) => JSON.parse(x)) : undefined;
      if (!dist.isRoot) return null;
      const path = await saveCheckpoint(
        outDir,
        {
          params: trainerParams(trainer, 'param'),
          expAvg: trainerParams(trainer, 'exp_avg'),
          expAvgSq: trainerParams(trainer, 'exp_avg_sq'),
          state: {
            step: stepsDone,
            adamStep,
            seed,
            data: data.state(),
            ...(world > 1 ? { worldSize: world, dataRanks } : {}),
            decayed: trainer.info.names.filter((_, i) => trainer.info.decayed[i]),
            config: JSON.parse(JSON.stringify(c)),
            extra: { loss: lastLog?.loss ?? null, rargen: 'train/1' },
          },
        },
        { keepLast: c.experiment.keep_last },
      );
      lastCheckpoint = path;
      return path;
    };

    for (let s = startStep; s < endStep; s++) {
      const ts = performance.now();
      const r = randomRatioAt(rs, s);
      let lossSum = 0;
      let correct = 0;
      let count = 0;
      let epoch = 0;
      for (let u = 0; u < accum; u++) {
        const batch = await data.nextBatch(B);
        epoch = batch.epochs[B - 1]!;
        const rnd = shardRandomness(
          { seed, seqLen: gcfg.seqLen, codebookSize: gcfg.codebookSize, numClasses: gcfg.numClasses, randomRatio: r, classLabelDropout: g.class_label_dropout },
          s,
          batch.classIds,
          { rank, size: world, accum, micro: u },
        );
        const res = await trainer.forwardBackward({
          ids: batch.ids,
          condition: rnd.condition,
          orders: rnd.orders,
          dropoutSeed: rnd.dropoutSeed,
          lossScale: 1 / accum,
          zeroGrad: u === 0,
          // the last micro-batch: its backward starts the gradient all-reduce bucket by bucket
          reduceGrads: world > 1 && u === accum - 1 && dist.settings.overlap,
        });
        lossSum += res.loss;
        correct += res.correct;
        count += res.count;
      }
      if (world > 1) {
        // The global batch's mean gradient and statistics; every rank then runs the same AdamW.
        trainer.allreduceGrads();
        const st = dist.allreduce(Float64Array.of(lossSum, correct, count), 'sum');
        lossSum = st[0]! / world;
        correct = st[1]!;
        count = st[2]!;
        epoch = Math.floor(dist.allreduce(Float64Array.of(epoch), 'max')[0]!);
      }
      const lr = lrAt(lrs, s);
      adamStep++;
      const { gradNorm } = await trainer.optimizerStep({
        lr,
        beta1: opt.beta1,
        beta2: opt.beta2,
        eps: opt.epsilon,
        weightDecay: opt.weight_decay,
        maxGradNorm: c.training.max_grad_norm,
        step: adamStep,
      });
      const loss = lossSum / accum;
      if (!Number.isFinite(loss)) throw new Error(`rargen train: the loss became ${loss} at step ${s + 1}; lower the learning rate`);
      lastLog = {
        step: s + 1,
        loss,
        accuracy: correct / count,
        lr,
        grad_norm: gradNorm,
        random_ratio: r,
        epoch,
        samples_per_s: (B * accum * world) / ((performance.now() - ts) / 1000),
      };
      log?.write(JSON.stringify(lastLog) + '\n');
      o.onStep?.(lastLog);
      bar.update(s + 1 - startStep, endStep - startStep);
      const done = s + 1;
      if (!showBar && (done % c.experiment.log_every === 0 || done === endStep)) {
        const el = (performance.now() - t0) / 1000;
        const eta = (el / (done - startStep)) * (endStep - done);
        print(
          `step ${done}/${maxSteps} loss ${loss.toFixed(4)} acc ${(lastLog.accuracy * 100).toFixed(1)}% lr ${lr.toExponential(3)} ` +
            `grad_norm ${gradNorm.toFixed(3)} r ${r.toFixed(3)} ${lastLog.samples_per_s.toFixed(1)} samples/s ETA ${formatDuration(eta)}`,
        );
      }
      if (checksum && world > 1) {
        const sums = dist.allgather(tensorChecksum(trainer.info.names.map((n) => trainer.getTensor('param', n))));
        const bad = sums.findIndex((x) => x !== sums[0]);
        if (bad > 0) throw new Error(`rargen train: after step ${s + 1} the parameters of rank ${bad} differ from rank 0's (checksum ${sums[bad]} vs ${sums[0]})`);
      }
      let stopping = o.stopSignal?.stop === true || o.signal?.aborted === true;
      if (world > 1) stopping = dist.any(stopping); // all ranks stop (and save) at the same step
      if (done % c.experiment.save_every === 0 || done === endStep || stopping) {
        const p = await save(done);
        if (p && (done % c.experiment.save_every === 0 || stopping)) print(`${showBar ? '\n' : ''}rargen train: saved ${p}`);
      }
      if (stopping) {
        bar.finish();
        print(`rargen train: stopped at step ${done}; run again to resume`);
        data.close();
        await closeStream(log);
        return { startStep, endStep: done, lastLog, lastCheckpoint, resumedFrom };
      }
    }
    bar.finish();
    data.close();
    await closeStream(log);
    if (checksum && world > 1 && endStep > startStep) print(`rargen train: parameters identical on all ${world} ranks after every step (checksums compared)`);
    if (endStep === startStep && !lastCheckpoint) print(`rargen train: nothing to do (step ${startStep} of ${maxSteps})`);
    else print(`rargen train: step ${endStep}/${maxSteps}; model in ${join(outDir, checkpointDirName(endStep), 'unwrapped_model', 'pytorch_model.bin')}`);
    return { startStep, endStep, lastLog, lastCheckpoint, resumedFrom };
  } finally {
    trainer.free();
  }
}

function closeStream(s: WriteStream | null): Promise<void> {
  return new Promise((res) => (s ? s.end(res) : res()));
}
