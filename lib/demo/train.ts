#!/usr/bin/env node
// `npm run train:demo`: generates the demo dataset, trains the small demo RAR model on
// the CPU (minutes) with demo/train.yaml, and writes the shipped weights:
//   demo/rar-demo.bin   generator state dict (torch zip; `rargen generate` loads it)
//   demo/demo.json      sizes, class names, palette and sampling defaults
// Extra key=value arguments override demo/train.yaml (e.g. training.max_train_steps=50).
import { mkdir, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../native.js';
import { loadTrainConfig, generatorConfigOf } from '../train/config.js';
import { runTraining } from '../train/loop.js';
import { MODEL_FILE } from '../train/checkpoint.js';
import { DEMO_CLASSES, DEMO_PALETTE, DEMO_SIZE, writeDemoDataset } from './shapes.js';

export const DEMO_DIR = 'demo';
export const DEMO_WEIGHTS = 'rar-demo.bin';
export const DEMO_INFO = 'demo.json';

async function main(): Promise<number> {
  const root = packageRoot();
  const overrides = process.argv.slice(2);
  const { config } = loadTrainConfig(join(root, DEMO_DIR, 'train.yaml'), overrides);
  const runDir = join(root, config.experiment.output_dir);
  config.experiment.output_dir = runDir;
  config.experiment.resume = false;
  const data = join(root, config.dataset.params.pretokenization!);
  config.dataset.params.pretokenization = data;
  await mkdir(runDir, { recursive: true });
  const samples = 20_000;
  process.stderr.write(`train:demo: writing ${samples} demo pictures to ${data}\n`);
  await writeDemoDataset(data, samples, 0);
  const t0 = performance.now();
  const res = await runTraining({ config, device: 'cpu', logJsonl: join(runDir, 'log.jsonl'), progress: process.stderr.isTTY });
  const minutes = (performance.now() - t0) / 60000;
  const out = join(root, DEMO_DIR);
  await copyFile(join(res.lastCheckpoint!, MODEL_FILE), join(out, DEMO_WEIGHTS));
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
  await writeFile(join(out, DEMO_INFO), JSON.stringify(info, null, 2) + '\n');
  process.stderr.write(`train:demo: ${res.endStep} steps in ${minutes.toFixed(1)} min, loss ${res.lastLog?.loss.toFixed(3)}; wrote ${join(out, DEMO_WEIGHTS)} and ${join(out, DEMO_INFO)}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`train:demo: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
