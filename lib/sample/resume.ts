// Sampling runs, part 2 of lib/sample: what a run has done so far, on disk. run.json (the
// settings; a restart with others is refused), the per-shard progress manifests (done
// indices and the CRC-32 of each image's pixels, replaced atomically after every batch),
// the PNGs present, and the locks (one process per shard, one merge at a time).
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../native.js';
import { decodePng } from '../image.js';
import { crc32 } from '../io/crc32.js';
import { writeFileAtomic } from '../io/file.js';
import { acquireLock as acquirePidLock } from '../io/lock.js';
import { SampleLockedError, ValidationError } from '../errors.js';
import { IMAGE_NAME, shardName, type SampleLayout, type SampleSettings, type Shard } from './plan.js';

const RUN_FORMAT = 'rargen-sample-imagenet/1';
const PROGRESS_FORMAT = 'rargen-sample-progress/1';

/**
 * The pid lock of lib/io/lock.ts, refusing with a SampleLockedError.
 * @internal exported for tests
 */
export function acquireLock(path: string, what: string): Promise<() => Promise<void>> {
  return acquirePidLock(path, what, SampleLockedError);
}

interface RunFile {
  format: string;
  settings: SampleSettings;
  /** What made the images: numerics (not the sampling) can differ across versions and device kinds. */
  environment?: RunEnvironment;
  createdAt: string;
}

export interface RunEnvironment {
  rargen: string;
  device: 'cpu' | 'cuda';
}

export function rargenVersion(): string {
  try {
    return JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
  } catch {
    return 'unknown';
  }
}

export async function readJson<T>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** The settings of the run in `layout` (error when there is none). */
export async function readSampleSettings(layout: SampleLayout): Promise<SampleSettings> {
  const r = await readJson<RunFile>(layout.runFile);
  if (!r) throw new Error(`${layout.dir} holds no sampling run (no run.json); start one with rargen sample-imagenet --out ${layout.dir}`);
  if (r.format !== RUN_FORMAT || !r.settings) throw new Error(`${layout.runFile}: not a ${RUN_FORMAT} file`);
  return r.settings;
}

/** The fields whose values differ (file names are informative only; the byte counts identify the checkpoints). */
export function settingsDiff(a: SampleSettings, b: SampleSettings): string[] {
  const flat = (s: SampleSettings): Record<string, string> => {
    const { generator, tokenizer, classes, ...rest } = s;
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(generator)) if (k !== 'file') out[`generator.${k}`] = JSON.stringify(v);
    for (const [k, v] of Object.entries(tokenizer)) if (k !== 'file') out[`tokenizer.${k}`] = JSON.stringify(v);
    out.classes = classes.length > 8 ? `${classes.length} classes ${classes[0]}..${classes.at(-1)} (${crc32(new Uint8Array(Int32Array.from(classes).buffer))})` : JSON.stringify(classes);
    for (const [k, v] of Object.entries(rest)) out[k] = JSON.stringify(v);
    return out;
  };
  const fa = flat(a);
  const fb = flat(b);
  return [...new Set([...Object.keys(fa), ...Object.keys(fb)])].filter((k) => fa[k] !== fb[k]).map((k) => `${k} ${fa[k] ?? 'unset'} there, ${fb[k] ?? 'unset'} here`);
}

/**
 * Writes run.json, or checks that the one there has the same settings (and notes a
 * change of rargen version or device kind, which may change the images' last bits).
 */
export async function ensureRunFile(layout: SampleLayout, settings: SampleSettings, environment: RunEnvironment, note: (m: string) => void): Promise<void> {
  const have = await readJson<RunFile>(layout.runFile);
  if (!have) {
    const file: RunFile = { format: RUN_FORMAT, settings, environment, createdAt: new Date().toISOString() };
    await writeFileAtomic(layout.runFile, JSON.stringify(file, null, 1) + '\n');
    return;
  }
  if (have.format !== RUN_FORMAT || !have.settings) throw new Error(`${layout.runFile}: not a ${RUN_FORMAT} file`);
  const diff = settingsDiff(have.settings, settings);
  if (diff.length)
    throw new ValidationError(`${layout.dir} was started with other settings (${diff.join('; ')}): resume with the same settings, or pick another --out`);
  const was = have.environment;
  if (was && (was.rargen !== environment.rargen || was.device !== environment.device))
    note(
      `${layout.dir} was started with rargen ${was.rargen} on ${was.device}, this is rargen ${environment.rargen} on ${environment.device}: ` +
        `the images are sampled the same way, but their numerics may differ slightly from those an uninterrupted run would have made`,
    );
}

interface ProgressFile {
  format: string;
  shard: string;
  range: [number, number];
  imagesDone: number;
  /** Done indices as [start, end) ranges. */
  done: [number, number][];
  /** Base64 of a little-endian Uint32Array over the range: CRC-32 of each done image's pixels. */
  crc32: string;
  updatedAt: string;
}

/** CRC-32 of the pixels of every image some manifest of `layout` lists as done. */
export async function readManifests(layout: SampleLayout): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  let names: string[] = [];
  try {
    names = await readdir(layout.progress);
  } catch {
    return out;
  }
  for (const n of names.filter((n) => /^shard-\d+-of-\d+\.json$/.test(n)).sort()) {
    const p = await readJson<ProgressFile>(join(layout.progress, n)).catch(() => undefined);
    if (!p || p.format !== PROGRESS_FORMAT || !Array.isArray(p.done) || !Array.isArray(p.range)) continue;
    const crcs = new Uint32Array(new Uint8Array(Buffer.from(p.crc32, 'base64')).buffer);
    if (crcs.length !== p.range[1] - p.range[0]) continue;
    for (const [a, b] of p.done) for (let g = a; g < b; g++) out.set(g, crcs[g - p.range[0]]!);
  }
  return out;
}

function toRanges(done: Uint8Array, start: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < done.length; i++) {
    if (!done[i]) continue;
    const a = i;
    while (i < done.length && done[i]) i++;
    out.push([start + a, start + i]);
  }
  return out;
}

export async function writeManifest(layout: SampleLayout, shard: Shard, range: [number, number], done: Uint8Array, crcs: Uint32Array): Promise<void> {
  let count = 0;
  for (const d of done) count += d;
  const p: ProgressFile = {
    format: PROGRESS_FORMAT,
    shard: `${shard.index}/${shard.count}`,
    range,
    imagesDone: count,
    done: toRanges(done, range[0]),
    crc32: Buffer.from(crcs.buffer, crcs.byteOffset, crcs.byteLength).toString('base64'),
    updatedAt: new Date().toISOString(),
  };
  await writeFileAtomic(join(layout.progress, `${shardName(shard)}.json`), JSON.stringify(p) + '\n', false);
}

/** Indices of the images present in a folder. */
export async function listImages(imagesDir: string): Promise<Set<number>> {
  let names: string[];
  try {
    names = await readdir(imagesDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw e;
  }
  const out = new Set<number>();
  for (const n of names) {
    const m = IMAGE_NAME.exec(n);
    if (m) out.add(Number(m[1]));
  }
  return out;
}

/** Decodes a PNG and checks its size; resolves to its pixels' CRC, or undefined when broken. */
export async function checkPng(path: string, resolution: number): Promise<number | undefined> {
  try {
    const img = decodePng(await readFile(path));
    if (img.width !== resolution || img.height !== resolution) return undefined;
    return crc32(img.data);
  } catch {
    return undefined;
  }
}

