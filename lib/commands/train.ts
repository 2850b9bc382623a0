// rargen train: train (or fine-tune) a RAR generator on pretokenized data, with the
// official config layout (1d-tokenizer configs/training/generator/rar.yaml) and
// OmegaConf-style overrides. Ctrl-C saves a checkpoint after the current step; run
// the same command again to resume exactly.
import { resolveDevice, type DeviceSpec } from '../device.js';
import { loadTrainConfig, splitConfigArgs, TrainConfigError } from '../train/config.js';
import { runTraining, type TrainRunResult } from '../train/loop.js';
import { worldFromEnv } from '../dist.js';
import { trainDemo } from '../demo/recipe.js';
import { demoPaths } from '../demo/index.js';
import { editDistance } from '../classes.js';
import { note, parseCommandArgs, UsageError, helpShown } from './_shared.js';
import { resolve } from 'node:path';

export const summary = 'train a RAR generator on pretokenized data (official rar.yaml config + key=value overrides)';

const USAGE = `Usage: rargen train config=FILE.yaml [key=value ...] [options]
       rargen train --demo --out DIR [key=value ...]

Trains a RAR generator on a pretokenized JSON-lines file
({"class_id": k, "tokens": [N ints]} per line, dataset.params.pretokenization).
The config has the layout of 1d-tokenizer's configs/training/generator/rar.yaml;
any key can be overridden as in OmegaConf: training.per_gpu_batch_size=32,
optimizer.params.learning_rate=1e-3, experiment.output_dir=runs/a.
Checkpoints go to experiment.output_dir/checkpoint-<step>/ every
experiment.save_every steps (unwrapped_model/pytorch_model.bin loads in
\`rargen generate\` and in torch); with experiment.resume=true (the default) a rerun
continues from the newest one, exactly.

Options:
  --init FILE          initial generator weights (torch .bin or safetensors) instead of a fresh init
  --no-shuffle         read the data in file order (no shuffle buffer)
  --device D           auto, cpu, cuda or cuda:N (default auto)
  --log-jsonl FILE     one JSON object per optimizer step: step, loss, accuracy, lr, grad_norm, random_ratio
  --steps N            stop after N optimizer steps of this run (saving a checkpoint)
  --demo               train the demo recipe (demo/train.yaml on generated 16x16 pictures)
  --out DIR            with --demo: the folder for the run, rar-demo.bin and demo.json
  -h, --help           show this help`;

export async function run(argv: string[]): Promise<number> {
  const { configFile, overrides, rest } = splitConfigArgs(argv);
  const { values, positionals } = parseCommandArgs(rest, {
    init: { type: 'string' },
    'no-shuffle': { type: 'boolean' },
    device: { type: 'string' },
    'log-jsonl': { type: 'string' },
    steps: { type: 'string' },
    demo: { type: 'boolean' },
    out: { type: 'string' },
  });
  if (helpShown(values, USAGE)) return 0;
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])} (overrides are key=value, the config is config=FILE.yaml)`);
  if (values.demo && configFile !== null) throw new UsageError('--demo trains demo/train.yaml: drop config=FILE (overrides key=value still apply)');
  if (values.demo && values.out === undefined) throw new UsageError('--demo needs --out DIR (a folder of yours for the run and the trained model)');
  if (!values.demo && values.out !== undefined) throw new UsageError('--out is for --demo; the run folder of a config is experiment.output_dir=DIR');
  if (values.demo && values.init !== undefined) throw new UsageError('--demo trains from scratch: drop --init');
  let loaded;
  try {
    loaded = loadTrainConfig(values.demo ? demoPaths().config : configFile, overrides);
  } catch (e) {
    if (e instanceof TrainConfigError) throw new UsageError(e.message);
    throw e;
  }
  checkOverrideKeys(overrides, loaded.unknownKeys, loaded.config);
  for (const k of loaded.unknownKeys) note(`rargen train: ignoring config key ${k} (in the config file, not used by rargen)`);
  let steps: number | undefined;
  if (values.steps !== undefined) {
    steps = Number(values.steps);
    if (!Number.isSafeInteger(steps) || steps < 1) throw new UsageError(`--steps expects an integer >= 1 but received ${JSON.stringify(values.steps)}`);
  }
  const dev = resolveDevice((values.device ?? 'auto') as DeviceSpec);
  const rank = worldFromEnv()?.rank ?? 0; // under mpirun only rank 0 prints
  if (rank === 0) note(`rargen train: ${dev.reason}`);
  if (values.demo) {
    const dest = resolve(values.out!);
    const t0 = performance.now();
    const res = await trainDemo({ dest, overrides, stepsThisRun: steps, device: dev.device as DeviceSpec });
    summarize(res, t0);
    note(`rargen train: wrote ${res.weights} and ${res.info}`);
    return 0;
  }
  const stopSignal = { stop: false };
  const onSigint = () => {
    if (stopSignal.stop) process.exit(130);
    stopSignal.stop = true;
    note('\nrargen train: stopping after this step (Ctrl-C again to quit without saving)');
  };
  // mpirun forwards SIGUSR1 to every rank: `kill -USR1 <mpirun pid>` saves and stops a
  // data-parallel run at the same step on all ranks (Ctrl-C on mpirun kills the job).
  const onUsr1 = () => {
    stopSignal.stop = true;
    if (rank === 0) note('rargen train: SIGUSR1: stopping after this step');
  };
  process.on('SIGINT', onSigint);
  process.on('SIGUSR1', onUsr1);
  const t0 = performance.now();
  try {
    const res = await runTraining({
      config: loaded.config,
      device: dev.device,
      init: values.init ?? null,
      shuffle: !values['no-shuffle'],
      logJsonl: values['log-jsonl'] ?? null,
      stepsThisRun: steps,
      stopSignal,
    });
    if (rank === 0) summarize(res, t0);
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGUSR1', onUsr1);
  }
  return 0;
}

/** The run's real end: the steps this run did, the last step's loss, and what next. */
function summarize(res: TrainRunResult, t0: number): void {
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  const last = res.lastLog;
  const loss = last ? `; last step loss ${last.loss.toFixed(4)}, accuracy ${(last.accuracy * 100).toFixed(1)}%` : '';
  note(`rargen train: this run did steps ${res.startStep} -> ${res.endStep} in ${s} s${loss}`);
}

function flatKeys(v: unknown, prefix: string, out: string[]): void {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return;
  for (const [k, x] of Object.entries(v)) {
    const p = prefix ? `${prefix}.${k}` : k;
    out.push(p);
    flatKeys(x, p, out);
  }
}

/** A key=value override naming a key rargen does not know is a typo: refuse it, with the nearest keys. */
function checkOverrideKeys(overrides: readonly string[], unknown: readonly string[], config: unknown): void {
  const known: string[] = [];
  flatKeys(config, '', known);
  for (const w of overrides) {
    const key = w.slice(0, w.indexOf('='));
    if (!unknown.some((u) => key === u || key.startsWith(u + '.'))) continue;
    const last = key.split('.').pop()!;
    const scored = known.map((k) => ({ k, d: Math.min(editDistance(key, k), editDistance(last, k.split('.').pop()!) + 1) })).sort((a, b) => a.d - b.d);
    const near = scored.filter((x) => x.d <= Math.max(2, Math.floor(last.length / 3))).slice(0, 3).map((x) => x.k);
    throw new UsageError(`unknown config key ${key}${near.length ? `; did you mean ${near.join(', ')}?` : ''}`);
  }
}
