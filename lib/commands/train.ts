// rargen train: train (or fine-tune) a RAR generator on pretokenized data, with the
// official config layout (1d-tokenizer configs/training/generator/rar.yaml) and
// OmegaConf-style overrides. Ctrl-C saves a checkpoint after the current step; run
// the same command again to resume exactly.
import { resolveDevice, type DeviceSpec } from '../device.js';
import { loadTrainConfig, splitConfigArgs, TrainConfigError } from '../train/config.js';
import { runTraining } from '../train/loop.js';
import { note, parseCommandArgs, UsageError } from './_shared.js';

export const summary = 'train a RAR generator on pretokenized data (official rar.yaml config + key=value overrides)';

const USAGE = `Usage: rargen train config=FILE.yaml [key=value ...] [options]

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
  -h, --help           show this help`;

export async function run(argv: string[]): Promise<number> {
  const { configFile, overrides, rest } = splitConfigArgs(argv);
  const { values, positionals } = parseCommandArgs(rest, {
    init: { type: 'string' },
    'no-shuffle': { type: 'boolean' },
    device: { type: 'string' },
    'log-jsonl': { type: 'string' },
    steps: { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])} (overrides are key=value, the config is config=FILE.yaml)`);
  let loaded;
  try {
    loaded = loadTrainConfig(configFile, overrides);
  } catch (e) {
    if (e instanceof TrainConfigError) throw new UsageError(e.message);
    throw e;
  }
  for (const k of loaded.unknownKeys) note(`rargen train: ignoring config key ${k} (not used by rargen)`);
  let steps: number | undefined;
  if (values.steps !== undefined) {
    steps = Number(values.steps);
    if (!Number.isSafeInteger(steps) || steps < 1) throw new UsageError(`--steps expects an integer >= 1 but received ${JSON.stringify(values.steps)}`);
  }
  const dev = resolveDevice((values.device ?? 'auto') as DeviceSpec);
  note(`rargen train: ${dev.reason}`);
  const stopSignal = { stop: false };
  const onSigint = () => {
    if (stopSignal.stop) process.exit(130);
    stopSignal.stop = true;
    note('\nrargen train: stopping after this step (Ctrl-C again to quit without saving)');
  };
  process.on('SIGINT', onSigint);
  try {
    await runTraining({
      config: loaded.config,
      device: dev.device,
      init: values.init ?? null,
      shuffle: !values['no-shuffle'],
      logJsonl: values['log-jsonl'] ?? null,
      stepsThisRun: steps,
      stopSignal,
    });
  } finally {
    process.off('SIGINT', onSigint);
  }
  return 0;
}
