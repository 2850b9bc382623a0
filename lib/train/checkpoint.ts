// Training checkpoints: written atomically, resumed exactly.
//
// Layout (close to what 1d-tokenizer's accelerate run leaves, so the model file is
// where its users look for it):
//   <output_dir>/checkpoint-<step>/
//     unwrapped_model/pytorch_model.bin   the generator state dict, torch.load-able;
//                                         `rargen generate --weights` takes it as is
//     optimizer.safetensors               AdamW moments: exp_avg.<name>, exp_avg_sq.<name>
//     state.json                          step, data-stream and RNG positions, config,
//                                         the parameter groups (written last)
//
// Atomicity: a checkpoint is assembled in a hidden sibling folder
// `.checkpoint-<step>.tmp-<pid>-<rand>` and renamed into place in one rename(2)
// after every file is synced. A run killed while saving leaves only that hidden
// folder (removed by the next save), so the newest `checkpoint-*` folder is always
// complete, and so is the one before it. Older checkpoints beyond `keepLast` are
// deleted only after the new one is in place.
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { openSafetensors, openTorchZip, saveSafetensors, saveTorch } from '../io/index.js';
import { syncDir, writeFileAtomic } from '../io/file.js';
import { CheckpointError } from '../errors.js';
import type { DataState } from './data.js';

export { CheckpointError };

export const CHECKPOINT_FORMAT = 'rargen-train-checkpoint';
export const CHECKPOINT_VERSION = 1;
export const MODEL_FILE = join('unwrapped_model', 'pytorch_model.bin');
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'state.json';

/** One parameter (or moment) tensor: float32, C order. */
export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}

/** Everything besides tensors that a resumed run needs. */
export interface TrainState {
  /** Optimizer steps done (the next step to run is `step`). */
  step: number;
  /** AdamW's own step count (bias corrections); equals `step` unless restarted. */
  adamStep: number;
  seed: number;
  data: DataState | null;
  /** Data-parallel runs: the number of ranks, and every rank's data position (rank 0's is `data`). */
  worldSize?: number;
  dataRanks?: DataState[];
  /** Names of the parameters with weight decay. */
  decayed: string[];
  /** The resolved config (the YAML tree) the run used. */
  config: unknown;
  /** Free-form extras (last loss, wall time, rargen version...). */
  extra?: Record<string, unknown>;
}

export interface CheckpointContents {
  params: Map<string, NamedTensor>;
  expAvg: Map<string, NamedTensor>;
  expAvgSq: Map<string, NamedTensor>;
  state: TrainState;
}

export function checkpointDirName(step: number): string {
  return `checkpoint-${step}`;
}

export interface SaveOptions {
  /** Keep this many newest checkpoints (0 = keep all). */
  keepLast?: number;
  /** Test hook: called between the stages of a save ('model', 'optimizer', 'state', 'rename'). */
  onStage?: (stage: string) => void | Promise<void>;
}

/** Saves atomically to `<outputDir>/checkpoint-<step>`; returns that path. */
export async function saveCheckpoint(outputDir: string, c: CheckpointContents, opts: SaveOptions = {}): Promise<string> {
  const step = c.state.step;
  if (!Number.isSafeInteger(step) || step < 0) throw new CheckpointError(`saveCheckpoint: expected a step >= 0 but received ${step}`);
  for (const [name, p] of c.params) {
    if (!c.expAvg.has(name) || !c.expAvgSq.has(name)) throw new CheckpointError(`saveCheckpoint: no optimizer moments for parameter ${name}`);
    if (p.data.length !== p.shape.reduce((a, b) => a * b, 1)) throw new CheckpointError(`saveCheckpoint: ${name} has ${p.data.length} values for shape [${p.shape}]`);
  }
  await mkdir(outputDir, { recursive: true });
  await removeStaleCheckpoints(outputDir);
  const finalDir = join(outputDir, checkpointDirName(step));
  const tmp = join(outputDir, `.${checkpointDirName(step)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  await mkdir(join(tmp, 'unwrapped_model'), { recursive: true });
  try {
    await opts.onStage?.('model');
    await saveTorch(
      join(tmp, MODEL_FILE),
      [...c.params].map(([n, t]) => [n, { dtype: 'float32' as const, shape: t.shape, data: t.data }] as const),
    );
    await opts.onStage?.('optimizer');
    const moments: [string, { dtype: 'float32'; shape: number[]; data: Float32Array }][] = [];
    for (const [n, t] of c.expAvg) moments.push([`exp_avg.${n}`, { dtype: 'float32', shape: t.shape, data: t.data }]);
    for (const [n, t] of c.expAvgSq) moments.push([`exp_avg_sq.${n}`, { dtype: 'float32', shape: t.shape, data: t.data }]);
    await saveSafetensors(join(tmp, OPTIMIZER_FILE), moments, { metadata: { format: 'pt', step: String(step) } });
    await opts.onStage?.('state');
    const stateJson = JSON.stringify({ format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, ...c.state }, null, 1);
    await writeFileAtomic(join(tmp, STATE_FILE), stateJson, false);
    await syncDir(tmp);
    await opts.onStage?.('rename');
    // Replacing a checkpoint of the same step: move the old one aside first.
    let old: string | null = null;
    if (await exists(finalDir)) {
      old = join(outputDir, `.${checkpointDirName(step)}.old-${process.pid}`);
      await rename(finalDir, old);
    }
    await rename(tmp, finalDir);
    await syncDir(outputDir);
    if (old) await rm(old, { recursive: true, force: true });
  } catch (err) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw err;
  }
  if (opts.keepLast && opts.keepLast > 0) {
    const all = await listCheckpoints(outputDir);
    for (const s of all.slice(0, Math.max(0, all.length - opts.keepLast))) {
      await rm(join(outputDir, checkpointDirName(s)), { recursive: true, force: true });
    }
  }
  return finalDir;
}

/** Steps of the complete checkpoints in `outputDir`, ascending. */
export async function listCheckpoints(outputDir: string): Promise<number[]> {
  let names: string[];
  try {
    names = await readdir(outputDir);
  } catch {
    return [];
  }
  const steps: number[] = [];
  for (const n of names) {
    const m = /^checkpoint-(\d+)$/.exec(n);
    if (m && (await exists(join(outputDir, n, STATE_FILE)))) steps.push(Number(m[1]));
  }
  return steps.sort((a, b) => a - b);
}

/** The newest complete checkpoint folder in `outputDir`, or null. */
export async function latestCheckpoint(outputDir: string): Promise<string | null> {
  const steps = await listCheckpoints(outputDir);
  return steps.length ? join(outputDir, checkpointDirName(steps[steps.length - 1]!)) : null;
}

/** Loads a checkpoint folder written by saveCheckpoint. */
export async function loadCheckpoint(dir: string): Promise<CheckpointContents> {
  let raw: string;
  try {
    const fh = await open(join(dir, STATE_FILE), 'r');
    try {
      raw = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw new CheckpointError(`${dir} is not a complete rargen training checkpoint (no readable ${STATE_FILE}): ${(err as Error).message}`);
  }
  const parsed = JSON.parse(raw) as TrainState & { format?: string; version?: number };
  if (parsed.format !== CHECKPOINT_FORMAT) throw new CheckpointError(`${join(dir, STATE_FILE)}: not a rargen training state (format ${parsed.format})`);
  if (parsed.version !== CHECKPOINT_VERSION)
    throw new CheckpointError(`${join(dir, STATE_FILE)}: checkpoint version ${parsed.version}, this rargen reads version ${CHECKPOINT_VERSION}`);
  const { format: _f, version: _v, ...state } = parsed;
  const params = new Map<string, NamedTensor>();
  const model = await openTorchZip(join(dir, MODEL_FILE));
  try {
    for (const [name, info] of model.tensors) params.set(name, { shape: [...info.shape], data: await model.readFloat32(name) });
  } finally {
    await model.close();
  }
  const expAvg = new Map<string, NamedTensor>();
  const expAvgSq = new Map<string, NamedTensor>();
  const opt = await openSafetensors(join(dir, OPTIMIZER_FILE));
  try {
    for (const [name, info] of opt.tensors) {
      const t = { shape: [...info.shape], data: await opt.readFloat32(name) };
      if (name.startsWith('exp_avg_sq.')) expAvgSq.set(name.slice('exp_avg_sq.'.length), t);
      else if (name.startsWith('exp_avg.')) expAvg.set(name.slice('exp_avg.'.length), t);
    }
  } finally {
    await opt.close();
  }
  const missing = [...params.keys()].filter((n) => !expAvg.has(n) || !expAvgSq.has(n));
  if (missing.length) throw new CheckpointError(`${join(dir, OPTIMIZER_FILE)}: no moments for ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
  return { params, expAvg, expAvgSq, state };
}

async function removeStaleCheckpoints(outputDir: string): Promise<void> {
  for (const n of await readdir(outputDir)) {
    if (/^\.checkpoint-\d+\.(tmp|old)-/.test(n)) {
      // Only other processes' leftovers (or ours from a failed save): a live
      // concurrent writer in the same folder is not supported.
      await rm(join(outputDir, n), { recursive: true, force: true });
    }
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Writes a small text file next to the checkpoints (config.yaml), atomically. */
export async function writeTextAtomic(path: string, text: string): Promise<void> {
  await writeFileAtomic(path, text);
}
