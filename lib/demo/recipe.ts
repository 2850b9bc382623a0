// The demo recipe: generate the demo dataset, train the small demo RAR model with
// demo/train.yaml, and write rar-demo.bin (generator state dict, torch zip) and
// demo.json (sizes, class names, palette, sampling defaults) into a folder. Used by
// `npm run train:demo` (into the package's demo/) and `rargen train --demo --out DIR`
// (into a folder of the user's).
import { mkdir, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../native.js';
import { loadTrainConfig, generatorConfigOf } from '../train/config.js';
import { runTraining, type TrainRunResult } from '../train/loop.js';
import { MODEL_FILE } from '../train/checkpoint.js';
import type { DeviceSpec } from '../device.js';
import { DEMO_CLASSES, DEMO_PALETTE, DEMO_SIZE, writeDemoDataset } from './shapes.js';

export const DEMO_WEIGHTS = 'rar-demo.bin';
export const DEMO_INFO = 'demo.json';

export interface TrainDemoOptions {
  /** Where rar-demo.bin and demo.json are written. */
  dest: string;
  /** Training run folder (checkpoints, log.jsonl); default DEST/run. */
  runDir?: string;
  /** The generated dataset; default RUNDIR/demo.jsonl. */
  dataPath?: string;
  /** key=value overrides of demo/train.yaml. */
  overrides?: readonly string[];
  device?: DeviceSpec;
  /** Demo pictures to generate (default 20000). */
  samples?: number;
  print?: (line: string) => void;
  progress?: boolean;
  signal?: AbortSignal;
  /** Stop after this many steps of the recipe (its schedule unchanged). */
  stepsThisRun?: number;
}

/** Trains the demo model; resolves to the training result and the two files written. */
export async function trainDemo(o: TrainDemoOptions): Promise<TrainRunResult & { weights: string; info: string; minutes: number }> {
  const print = o.print ?? ((l: string) => process.stderr.write(l + '\n'));
  const { config } = loadTrainConfig(join(packageRoot(), 'demo', 'train.yaml'), o.overrides ?? []);
  const runDir = o.runDir ?? join(o.dest, 'run');
  config.experiment.output_dir = runDir;
  config.experiment.resume = false;
  const data = o.dataPath ?? join(runDir, 'demo.jsonl');
  config.dataset.params.pretokenization = data;
  await mkdir(runDir, { recursive: true });
  await mkdir(o.dest, { recursive: true });
  const samples = o.samples ?? 20_000;
  print(`train demo: writing ${samples} demo pictures to ${data}`);
  await writeDemoDataset(data, samples, 0);
  const t0 = performance.now();
  const res = await runTraining({ config, device: o.device ?? 'cpu', logJsonl: join(runDir, 'log.jsonl'), progress: o.progress, print, signal: o.signal, stepsThisRun: o.stepsThisRun });
  const minutes = (performance.now() - t0) / 60000;
  const weights = join(o.dest, DEMO_WEIGHTS);
  await copyFile(join(res.lastCheckpoint!, MODEL_FILE), weights);
  const g = config.model.generator;
  const info = {
    format: 'rargen-demo/1',
    generator: generatorConfigOf(config),
    sampling: { guidanceScale: g.guidance_scale, guidanceScalePow: g.guidance_scale_pow, temperature: g.randomize_temperature },
    classes: [...DEMO_CLASSES],
    palette: DEMO_PALETTE.map((c) => [...c]),
    pictureSize: DEMO_SIZE,
    training: { steps: res.endStep, finalLoss: res.lastLog?.loss ?? null, finalAccuracy: res.lastLog?.accuracy ?? null, cpuMinutes: Number(minutes.toFixed(2)), config: 'demo/train.yaml' },
  };
  const infoPath = join(o.dest, DEMO_INFO);
  await writeFile(infoPath, JSON.stringify(info, null, 2) + '\n');
  return { ...res, weights, info: infoPath, minutes };
}
