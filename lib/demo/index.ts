/// <reference types="node" preserve="true" />
// The demo: a procedurally generated dataset of 16x16 palette pictures in ten
// classes, and the small RAR model trained on it that ships in demo/.
export * from './shapes.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../native.js';
import type { GeneratorConfig, SamplingDefaults } from '../config.js';


/** What demo/demo.json says about the shipped demo model (written by `npm run train:demo`). */
export interface DemoInfo {
  format: 'rargen-demo/1';
  generator: GeneratorConfig;
  sampling: SamplingDefaults;
  classes: string[];
  palette: [number, number, number][];
  pictureSize: number;
  training: { steps: number; finalLoss: number | null; finalAccuracy: number | null; cpuMinutes: number; config: string };
}

/** Paths of the shipped demo files: demo/rar-demo.bin (weights) and demo/demo.json. */
export function demoPaths(root = packageRoot()): { weights: string; info: string; config: string } {
  return { weights: join(root, 'demo', 'rar-demo.bin'), info: join(root, 'demo', 'demo.json'), config: join(root, 'demo', 'train.yaml') };
}

/** Reads demo/demo.json; throws saying how to create it when it is missing. */
export function loadDemoInfo(root = packageRoot()): DemoInfo {
  const p = demoPaths(root).info;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as DemoInfo;
  } catch (err) {
    throw new Error(`rargen: the demo model is missing (${p}: ${(err as Error).message}); create it with \`npm run train:demo\``);
  }
}
