#!/usr/bin/env node
// `npm run train:demo`: generates the demo dataset, trains the small demo RAR model on
// the CPU (minutes) with demo/train.yaml, and writes the shipped weights:
//   demo/rar-demo.bin   generator state dict (torch zip; `rargen generate` loads it)
//   demo/demo.json      sizes, class names, palette and sampling defaults
// Extra key=value arguments override demo/train.yaml (e.g. training.max_train_steps=50).
import { join } from 'node:path';
import { packageRoot } from '../native.js';
import { loadTrainConfig } from '../train/config.js';
import { trainDemo } from './recipe.js';

export { DEMO_WEIGHTS, DEMO_INFO } from './recipe.js';
export const DEMO_DIR = 'demo';

async function main(): Promise<number> {
  const root = packageRoot();
  const overrides = process.argv.slice(2);
  const { config } = loadTrainConfig(join(root, DEMO_DIR, 'train.yaml'), overrides);
  const runDir = join(root, config.experiment.output_dir);
  const res = await trainDemo({
    dest: join(root, DEMO_DIR),
    runDir,
    dataPath: join(root, config.dataset.params.pretokenization!),
    overrides,
    device: 'cpu',
    progress: process.stderr.isTTY,
  });
  process.stderr.write(`train:demo: ${res.endStep} steps in ${res.minutes.toFixed(1)} min, loss ${res.lastLog?.loss.toFixed(3)}; wrote ${res.weights} and ${res.info}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`train:demo: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
