// Sampling the images for FID (MODEL.md, "Images for FID"): numPerClass images for
// each class (50 x classes 0..999 = 50,000 for the paper), written as PNGs and then
// as one .npz `arr_0` (num, R, R, 3) uint8 for ADM's evaluator.
//
//   await sampleImageNet({ generator, tokenizer, out: 'rar_b' });   // -> rar_b/images/*.png, rar_b.npz
//
// Built to be killed: a 50,000-image run takes an hour or more on a GPU, so
//  - image g (g = class position * numPerClass + j, class-major like the official
//    sample script) is a pure function of (seed, g): the native sampler draws image g's
//    randomness from (seed, g, step) whatever the batch, so any split into batches,
//    shards or restarts gives the same images;
//  - each PNG is written to a temp file, fsynced and renamed, so a file at its final
//    name is complete; after a batch's PNGs (and their folder) are synced, the shard's
//    progress manifest (which images are done, and the CRC-32 of their pixels) is
//    replaced atomically;
//  - a restart trusts the images its manifests list, checks any other PNG it finds
//    by decoding it (a crash can leave PNGs newer than the manifest), and generates
//    only the missing ones;
//  - the .npz is assembled only when every image exists, streamed from the PNGs in
//    index order (the CRCs are checked on the way) into a temp file that is renamed
//    to its final name at the end: an .npz at that name is always complete.
//
// Layout of a run (`out` = OUT):
//   OUT/run.json                    the settings; a restart with other settings is refused
//   OUT/images/000000.png ...       image g, R x R RGB
//   OUT/progress/shard-I-of-N.json  manifest of shard I/N (shard-0-of-1 unsharded)
//   OUT/progress/*.lock             one running process per shard, one merge at a time
//   OUT.npz                         arr_0 (num, R, R, 3) uint8 and labels (num,) int64
//
// Shards (one process per GPU, or per machine) take contiguous blocks of image
// indices; the last one to finish writes the .npz (or `rargen merge-samples OUT`,
// which also takes the folders of shards run on other machines).
import { z } from 'zod';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { mkdir, open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Generator, Tokenizer, decode, generate, parseOptions, ValidationError, type Precision } from './generate.js';
import { packageRoot } from './native.js';
import { decodePng, encodePngAsync, type RgbImage } from './image.js';
import { NpzStreamWriter } from './io/index.js';
import { AtomicFile, isLiveTempFile, writeFully } from './io/file.js';
import { crc32 } from './io/crc32.js';

// ---------------------------------------------------------------------------------
// Settings, layout, shards

const RUN_FORMAT = 'rargen-sample-imagenet/1';
const PROGRESS_FORMAT = 'rargen-sample-progress/1';

/** What makes two runs the same run (OUT/run.json). Images depend on all of it. */
export interface SampleSettings {
  generator: { file: string; bytes: number; preset: string | null; seqLen: number; numClasses: number; codebookSize: number; hiddenSize: number; depth: number };
  tokenizer: { file: string; bytes: number; resolution: number };
  /** Weight storage on the backend (f16/bf16 change the images). */
  precision: Precision;
  /** Class of each block of numPerClass images, in order. */
  classes: number[];
  numPerClass: number;
  numImages: number;
  seed: string;
  guidanceScale: number;
  guidanceScalePow: number;
  temperature: number;
  topK: number;
  topP: number;
}

/** Where a run's files are. */
export interface SampleLayout {
  dir: string;
  images: string;
  progress: string;
  runFile: string;
  npz: string;
}

/** The files of the run in `out`; the .npz defaults to `out` + '.npz' beside the folder. */
export function sampleLayout(out: string, npz?: string): SampleLayout {
  const dir = resolve(out);
  return { dir, images: join(dir, 'images'), progress: join(dir, 'progress'), runFile: join(dir, 'run.json'), npz: resolve(npz ?? dir + '.npz') };
}

/** The PNG name of image g: 000000.png, 000001.png, ... */
export function sampleImageName(g: number): string {
  return String(g).padStart(6, '0') + '.png';
}
const IMAGE_NAME = /^(\d{6,})\.png$/;

export interface Shard {
  index: number;
  count: number;
}

/** Parses "i/n" (0 <= i < n). */
export function parseShard(text: string, flag = '--shard'): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) throw new ValidationError(`${flag} expects i/n, e.g. 0/2 for the first of two shards, but received ${JSON.stringify(text)}`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (!Number.isSafeInteger(count) || count < 1) throw new ValidationError(`${flag} expects i/n with n >= 1 but received ${JSON.stringify(text)}`);
  if (index >= count) throw new ValidationError(`${flag} expects i/n with 0 <= i < n but received ${JSON.stringify(text)} (the shards of ${count} are 0/${count} to ${count - 1}/${count})`);
  return { index, count };
}

/** Image indices [start, end) of a shard: contiguous blocks, sizes differing by at most one. */
export function shardRange(total: number, shard: Shard): [number, number] {
  return [Math.floor((total * shard.index) / shard.count), Math.floor((total * (shard.index + 1)) / shard.count)];
}

/** The class of image g. */
export function sampleLabel(settings: Pick<SampleSettings, 'classes' | 'numPerClass'>, g: number): number {
  return settings.classes[Math.floor(g / settings.numPerClass)]!;
}

/**
 * Contiguous runs of the sorted `missing` indices, cut at multiples of batchSize (so
 * a resumed run batches like an uninterrupted one wherever it can).
 */
export function planBatches(missing: readonly number[], batchSize: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < missing.length; ) {
    const a = missing[i]!;
    const cellEnd = (Math.floor(a / batchSize) + 1) * batchSize;
    let b = a + 1;
    i++;
    while (i < missing.length && missing[i] === b && b < cellEnd) {
      b++;
      i++;
    }
    out.push([a, b]);
  }
  return out;
}

const shardName = (s: Shard) => `shard-${s.index}-of-${s.count}`;

// ---------------------------------------------------------------------------------
// Small file helpers

/** Writes `data` to `path` through a temp file: fsynced, renamed. */
async function writeAtomic(path: string, data: Uint8Array): Promise<void> {
  const f = await AtomicFile.create(path);
  try {
    await writeFully(f.fh, data, 0);
    await f.commit();
  } catch (e) {
    await f.abort();
    throw e;
  }
}

/** fsyncs a folder so that renames in it survive a crash (best effort where unsupported). */
async function syncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    /* some filesystems cannot fsync a folder */
  } finally {
    await fh?.close();
  }
}

function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Deletes the temp files (lib/io AtomicFile's `.<name>.tmp-<pid>-*`) of processes no longer alive.
 * @internal exported for tests
 */
export async function removeStaleTemps(dir: string, prefix = ''): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const m = /^\.(.+)\.tmp-(\d+)-[a-z0-9]*$/.exec(n);
    if (!m || !m[1]!.startsWith(prefix)) continue;
    const pid = Number(m[2]);
    // our own pid: stale unless this process has it open (a restarted PID 1 reuses the pid)
    const stale = pid === process.pid ? !isLiveTempFile(join(dir, n)) : !pidAlive(pid);
    if (stale) await unlink(join(dir, n)).catch(() => undefined);
  }
}

/** Another process holds the lock. */
export class SampleLockedError extends Error {
  override name = 'SampleLockedError';
  readonly code = 'RARGEN_SAMPLE_LOCKED';
}

/** Not every image exists yet (mergeSamples). */
export class SamplesIncompleteError extends Error {
  override name = 'SamplesIncompleteError';
  readonly code = 'RARGEN_SAMPLES_INCOMPLETE';
  constructor(
    message: string,
    readonly missing: number,
  ) {
    super(message);
  }
}

/** Locks this process holds now (absolute paths): a lock naming our own pid is ours only if listed here. */
const heldLocks = new Set<string>();

/** The kernel's boot id (Linux), or undefined. */
function bootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** A process's start time in clock ticks since boot (/proc/PID/stat field 22, Linux), or undefined. */
function processStart(pid: number): string | undefined {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export interface LockOwner {
  pid?: number;
  host?: string;
  bootId?: string;
  /** processStart(pid) when the lock was taken. */
  processStart?: string;
  startedAt?: string;
}

/**
 * Whether the process that wrote a lock may still run. A lock from another host counts
 * as alive (nothing here can tell). On this host it is stale when it was written under
 * another boot, when its pid is ours but this process does not hold it (a restarted
 * container runs as PID 1 again), when no process has its pid, or when the process with
 * that pid started at another time (the pid was reused).
 * @internal exported for tests
 */
export function lockOwnerAlive(owner: LockOwner, path: string): boolean {
  if (typeof owner.pid !== 'number') return false;
  if (owner.host !== hostname()) return true;
  const boot = bootId();
  if (owner.bootId && boot && owner.bootId !== boot) return false;
  if (owner.pid === process.pid) return heldLocks.has(resolve(path));
  if (!pidAlive(owner.pid)) return false;
  const start = processStart(owner.pid);
  if (owner.processStart && start && owner.processStart !== start) return false;
  return true;
}

/**
 * Creates `path` exclusively (taking over the lock of a process that no longer runs, see
 * lockOwnerAlive); resolves to its release.
 * @internal exported for tests
 */
export async function acquireLock(path: string, what: string): Promise<() => Promise<void>> {
  const me: LockOwner = { pid: process.pid, host: hostname(), bootId: bootId(), processStart: processStart(process.pid), startedAt: new Date().toISOString() };
  const abs = resolve(path);
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(path, 'wx');
      try {
        await fh.writeFile(JSON.stringify(me) + '\n');
      } finally {
        await fh.close();
      }
      heldLocks.add(abs);
      return async () => {
        heldLocks.delete(abs);
        await unlink(path).catch(() => undefined);
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      let owner: LockOwner = {};
      try {
        owner = JSON.parse(await readFile(path, 'utf8'));
      } catch {
        /* a lock being written, or garbage: treated as stale below */
      }
      if (lockOwnerAlive(owner, path))
        throw new SampleLockedError(`${what} is already running (pid ${owner.pid} on ${owner.host}); if no such process runs, delete ${path}`);
      await unlink(path).catch(() => undefined);
    }
  }
}

// ---------------------------------------------------------------------------------
// run.json and the progress manifests

interface RunFile {
  format: string;
  settings: SampleSettings;
  /** What made the images: numerics (not the sampling) can differ across versions and device kinds. */
  environment?: RunEnvironment;
  createdAt: string;
}

interface RunEnvironment {
  rargen: string;
  device: 'cpu' | 'cuda';
}

function rargenVersion(): string {
  try {
    return JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
  } catch {
    return 'unknown';
  }
}

async function readJson<T>(path: string): Promise<T | undefined> {
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
function settingsDiff(a: SampleSettings, b: SampleSettings): string[] {
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
async function ensureRunFile(layout: SampleLayout, settings: SampleSettings, environment: RunEnvironment, note: (m: string) => void): Promise<void> {
  const have = await readJson<RunFile>(layout.runFile);
  if (!have) {
    const file: RunFile = { format: RUN_FORMAT, settings, environment, createdAt: new Date().toISOString() };
    await writeAtomic(layout.runFile, Buffer.from(JSON.stringify(file, null, 1) + '\n'));
    await syncDir(layout.dir);
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
async function readManifests(layout: SampleLayout): Promise<Map<number, number>> {
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

async function writeManifest(layout: SampleLayout, shard: Shard, range: [number, number], done: Uint8Array, crcs: Uint32Array): Promise<void> {
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
  await writeAtomic(join(layout.progress, `${shardName(shard)}.json`), Buffer.from(JSON.stringify(p) + '\n'));
}

/** Indices of the images present in a folder. */
async function listImages(imagesDir: string): Promise<Set<number>> {
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
async function checkPng(path: string, resolution: number): Promise<number | undefined> {
  try {
    const img = decodePng(await readFile(path));
    if (img.width !== resolution || img.height !== resolution) return undefined;
    return crc32(img.data);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------
// Sampling

export interface SampleProgress {
  /** Images of this shard sampled (tokens done) in this call, fractional within a batch. */
  sampled: number;
  /** Images of this shard written in this call. */
  written: number;
  /** Images this call has to produce (the shard's missing ones). */
  toDo: number;
  /** Images of the shard already there when the call started. */
  alreadyDone: number;
  /** Images in the shard. */
  shardTotal: number;
}

export interface SampleBatchInfo {
  /** Image indices [start, end) just written. */
  start: number;
  end: number;
  written: number;
  toDo: number;
}

export interface SampleImageNetOptions {
  generator: Generator;
  tokenizer: Tokenizer;
  /** The run folder (OUT); created if needed. */
  out: string;
  /** The .npz (default OUT.npz beside the folder). */
  npz?: string;
  /** Classes, in order (default all of the generator's: 0..999). */
  classes?: readonly number[];
  /** Images per class (default 50). */
  numPerClass?: number;
  /** Default: the generator's (its preset's). */
  guidanceScale?: number;
  guidanceScalePow?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Default 0. Image g depends on (seed, g) only. */
  seed?: number | bigint;
  /** Images per native call (default 128 on CUDA, 32 on CPU). Does not change the images. */
  batchSize?: number;
  /** Images per tokenizer decode call (default min(batchSize, 32)). */
  decodeBatchSize?: number;
  /** This process's part (default 0/1: everything). */
  shard?: Shard;
  /** Write the .npz when every image (of all shards) exists (default true). */
  merge?: boolean;
  /** Aborting cancels the running batch; images already written stay; rejects with an AbortError. */
  signal?: AbortSignal;
  onProgress?: (p: SampleProgress) => void;
  /** After each batch's PNGs and the manifest are on disk. */
  onBatchWritten?: (b: SampleBatchInfo) => void | Promise<void>;
  /** Status lines (checks on restart, merge decisions). */
  onNote?: (message: string) => void;
  /** Progress of the .npz assembly. */
  onMergeProgress?: (done: number, total: number) => void;
}

export interface SampleResult {
  layout: SampleLayout;
  settings: SampleSettings;
  shard: Shard;
  /** This shard's image indices [start, end). */
  range: [number, number];
  alreadyDone: number;
  generated: number;
  /** Images of the whole run still missing (other shards' when this one is done). */
  missing: number;
  /** Whether the .npz at layout.npz is complete and up to date now. */
  npzComplete: boolean;
}

function abortError(signal: AbortSignal): DOMException {
  const e = new DOMException('The operation was aborted', 'AbortError');
  if (signal.reason !== undefined) Object.defineProperty(e, 'cause', { value: signal.reason, configurable: true, writable: true });
  return e;
}

const intAtLeast = (min: number) => {
  const e = `integer >= ${min}`;
  return z.number({ error: e }).int({ error: e }).min(min, { error: e });
};
const finiteAtLeast0 = z.number({ error: 'finite number >= 0' }).min(0, { error: 'finite number >= 0' });

/**
 * Samples the images of the run in `out` that do not exist yet (this shard's), and
 * writes the .npz when the whole run is there. Resumable: see the top of this file.
 */
export async function sampleImageNet(options: SampleImageNetOptions): Promise<SampleResult> {
  const base = parseOptions(
    z.looseObject(
      {
        generator: z.custom<Generator>((v) => v instanceof Generator, { error: 'a Generator from loadGenerator()' }),
        tokenizer: z.custom<Tokenizer>((v) => v instanceof Tokenizer, { error: 'a Tokenizer from loadTokenizer()' }),
      },
      { error: 'an options object' },
    ),
    options,
    'sampleImageNet',
  );
  const gen = base.generator;
  const tok = base.tokenizer;
  const K = gen.config.numClasses;
  const classIdE = `integer between 0 and ${K - 1}`;
  const o = parseOptions(
    z.strictObject({
      generator: z.unknown(),
      tokenizer: z.unknown(),
      out: z.string({ error: 'a folder path string' }).min(1, { error: 'a folder path string' }),
      npz: z.string({ error: 'a file path string' }).min(1, { error: 'a file path string' }).optional(),
      classes: z.array(z.number({ error: classIdE }).int({ error: classIdE }).min(0, { error: classIdE }).max(K - 1, { error: classIdE }), { error: 'a non-empty array of class ids' }).min(1, { error: 'a non-empty array of class ids' }).optional(),
      numPerClass: intAtLeast(1).optional(),
      guidanceScale: finiteAtLeast0.optional(),
      guidanceScalePow: finiteAtLeast0.optional(),
      temperature: z.number({ error: 'finite number > 0' }).gt(0, { error: 'finite number > 0' }).optional(),
      topK: intAtLeast(0).optional(),
      topP: z.number({ error: 'number greater than 0 and at most 1' }).gt(0, { error: 'number greater than 0 and at most 1' }).max(1, { error: 'number greater than 0 and at most 1' }).optional(),
      seed: z.custom<number | bigint>((v) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) || (typeof v === 'bigint' && v >= 0n && v < 2n ** 64n), { error: 'safe integer >= 0 or bigint between 0 and 2^64-1' }).optional(),
      batchSize: intAtLeast(1).optional(),
      decodeBatchSize: intAtLeast(1).optional(),
      shard: z.strictObject({ index: intAtLeast(0), count: intAtLeast(1) }, { error: 'a shard {index, count}' }).refine((s) => s.index < s.count, { error: 'a shard {index, count} with index < count' }).optional(),
      merge: z.boolean({ error: 'boolean' }).optional(),
      signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal, { error: 'an AbortSignal' }).optional(),
      onProgress: z.custom<(p: SampleProgress) => void>((v) => typeof v === 'function', { error: 'a function' }).optional(),
      onBatchWritten: z.custom<(b: SampleBatchInfo) => void | Promise<void>>((v) => typeof v === 'function', { error: 'a function' }).optional(),
      onNote: z.custom<(m: string) => void>((v) => typeof v === 'function', { error: 'a function' }).optional(),
      onMergeProgress: z.custom<(d: number, t: number) => void>((v) => typeof v === 'function', { error: 'a function' }).optional(),
    }),
    options,
    'sampleImageNet',
  );
  gen.handle('sampleImageNet');
  tok.handle('sampleImageNet');
  if (tok.numTokens !== gen.config.seqLen) throw new ValidationError(`the tokenizer decodes ${tok.numTokens} tokens per image but the generator samples ${gen.config.seqLen}`);
  if (tok.config.codebookSize !== gen.config.codebookSize) throw new ValidationError(`the tokenizer's codebook has ${tok.config.codebookSize} entries but the generator's has ${gen.config.codebookSize}`);

  const classes = o.classes ?? Array.from({ length: K }, (_, k) => k);
  const numPerClass = o.numPerClass ?? 50;
  const c = gen.config;
  const settings: SampleSettings = {
    generator: { file: basename(gen.path), bytes: (await stat(gen.path)).size, preset: gen.preset?.name ?? null, seqLen: c.seqLen, numClasses: c.numClasses, codebookSize: c.codebookSize, hiddenSize: c.hiddenSize, depth: c.depth },
    tokenizer: { file: basename(tok.path), bytes: (await stat(tok.path)).size, resolution: tok.resolution },
    precision: gen.precision,
    classes,
    numPerClass,
    numImages: classes.length * numPerClass,
    seed: String(o.seed ?? 0),
    guidanceScale: o.guidanceScale ?? gen.sampling.guidanceScale,
    guidanceScalePow: o.guidanceScalePow ?? gen.sampling.guidanceScalePow,
    temperature: o.temperature ?? gen.sampling.temperature,
    topK: o.topK ?? 0,
    topP: o.topP ?? 1,
  };
  const shard = o.shard ?? { index: 0, count: 1 };
  const batchSize = o.batchSize ?? (gen.device.kind === 'cuda' ? 128 : 32);
  const decodeBatch = o.decodeBatchSize ?? Math.min(batchSize, 32);
  const layout = sampleLayout(o.out, o.npz);
  const range = shardRange(settings.numImages, shard);
  const [start, end] = range;
  const R = tok.resolution;
  const note = (m: string) => o.onNote?.(m);

  await mkdir(layout.images, { recursive: true });
  await mkdir(layout.progress, { recursive: true });
  const release = await acquireLock(join(layout.progress, `${shardName(shard)}.lock`), `shard ${shard.index}/${shard.count} of ${layout.dir}`);
  let alreadyDone = 0;
  let generated = 0;
  try {
    await ensureRunFile(layout, settings, { rargen: rargenVersion(), device: gen.device.kind }, note);
    await removeStaleTemps(layout.images);
    await removeStaleTemps(layout.progress);

    // What is there: manifest-listed PNGs are trusted; others are decoded and checked.
    const known = await readManifests(layout);
    const present = await listImages(layout.images);
    const done = new Uint8Array(end - start);
    const crcs = new Uint32Array(end - start);
    const missing: number[] = [];
    let checked = 0;
    for (let g = start; g < end; g++) {
      let crc = present.has(g) ? known.get(g) : undefined;
      if (crc === undefined && present.has(g)) {
        const path = join(layout.images, sampleImageName(g));
        crc = await checkPng(path, R);
        checked++;
        if (crc === undefined) {
          note(`${path} is not a complete ${R}x${R} PNG: generating it again`);
          await unlink(path).catch(() => undefined);
        }
      }
      if (crc === undefined) missing.push(g);
      else {
        done[g - start] = 1;
        crcs[g - start] = crc;
      }
    }
    alreadyDone = end - start - missing.length;
    if (alreadyDone > 0) note(`resuming: ${alreadyDone} of the shard's ${end - start} images exist${checked ? ` (${checked} not in a manifest, checked by decoding)` : ''}; ${missing.length} to generate`);
    await writeManifest(layout, shard, range, done, crcs);

    // Batches: the next one samples (off the main thread) while this one is encoded and written.
    const batches = planBatches(missing, batchSize);
    const toDo = missing.length;
    let sampledBefore = 0;
    const produce = async (a: number, b: number): Promise<RgbImage[]> => {
      const n = b - a;
      const classIds = new Int32Array(n);
      for (let i = 0; i < n; i++) classIds[i] = sampleLabel(settings, a + i);
      const { tokens } = await generate({
        generator: gen,
        classLabels: classIds,
        guidanceScale: settings.guidanceScale,
        guidanceScalePow: settings.guidanceScalePow,
        temperature: settings.temperature,
        topK: settings.topK,
        topP: settings.topP,
        greedy: false,
        seed: BigInt(settings.seed),
        batchSize: n,
        indexOffset: a,
        signal: o.signal,
        // generate() reports its one batch while it samples (imagesDone 0), then once when done: the latter is left out.
        onProgress: o.onProgress
          ? (p) => {
              if (p.imagesDone === 0) o.onProgress!({ sampled: sampledBefore + n * p.fraction, written: generated, toDo, alreadyDone, shardTotal: end - start });
            }
          : undefined,
      });
      sampledBefore += n;
      return decode(tok, tokens, { batchSize: decodeBatch, signal: o.signal });
    };

    let next = batches.length ? produce(...batches[0]!) : undefined;
    for (let k = 0; k < batches.length; k++) {
      const [a, b] = batches[k]!;
      const images = await next!;
      next = k + 1 < batches.length && !o.signal?.aborted ? produce(...batches[k + 1]!) : undefined;
      next?.catch(() => undefined); // surfaced when awaited
      // Each PNG's deflate runs on libuv's thread pool, so the batch's images encode concurrently.
      const writes: Promise<void>[] = [];
      for (let i = 0; i < images.length; i++) {
        const img = images[i]!;
        crcs[a + i - start] = crc32(img.data);
        const path = join(layout.images, sampleImageName(a + i));
        writes.push(encodePngAsync(img).then((png) => writeAtomic(path, png)));
      }
      const results = await Promise.allSettled(writes);
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      await syncDir(layout.images);
      done.fill(1, a - start, b - start);
      await writeManifest(layout, shard, range, done, crcs);
      generated += b - a;
      o.onProgress?.({ sampled: sampledBefore, written: generated, toDo, alreadyDone, shardTotal: end - start });
      await o.onBatchWritten?.({ start: a, end: b, written: generated, toDo });
      if (o.signal?.aborted) throw abortError(o.signal);
    }
  } finally {
    await release();
  }

  // The .npz, when every image of the run exists.
  const result: SampleResult = { layout, settings, shard, range, alreadyDone, generated, missing: 0, npzComplete: false };
  const present = await listImages(layout.images);
  for (let g = 0; g < settings.numImages; g++) if (!present.has(g)) result.missing++;
  if (result.missing > 0) {
    if (shard.count > 1) note(`shard ${shard.index}/${shard.count} is done; ${result.missing} images of other shards are missing: the last shard to finish writes ${layout.npz} (or run rargen merge-samples ${layout.dir})`);
    return result;
  }
  if (o.merge === false) return result;
  if (generated === 0 && (await npzUpToDate(layout, settings))) {
    note(`${layout.npz} is complete already`);
    result.npzComplete = true;
    return result;
  }
  try {
    await mergeSamples(layout.dir, { npz: layout.npz, signal: o.signal, onProgress: o.onMergeProgress });
    result.npzComplete = true;
  } catch (e) {
    if (!(e instanceof SampleLockedError)) throw e;
    note(`another process is writing ${layout.npz}: ${e.message}`);
  }
  return result;
}

// ---------------------------------------------------------------------------------
// Merging into the .npz

interface MergedRecord {
  npz: string;
  bytes: number;
  mtimeMs: number;
  numImages: number;
}

/** Whether layout.npz is the one the last merge of this run wrote (same size and mtime). */
async function npzUpToDate(layout: SampleLayout, settings: SampleSettings): Promise<boolean> {
  const rec = await readJson<MergedRecord>(join(layout.progress, 'merged.json')).catch(() => undefined);
  if (!rec || rec.npz !== layout.npz || rec.numImages !== settings.numImages) return false;
  try {
    const st = await stat(layout.npz);
    return st.size === rec.bytes && st.mtimeMs === rec.mtimeMs;
  } catch {
    return false;
  }
}

export interface MergeSamplesOptions {
  /** The .npz (default OUT.npz beside the folder). */
  npz?: string;
  /** More run folders holding images of the same run (shards run on other machines). */
  sources?: readonly string[];
  /** Shard count, to say which shard's images are missing. */
  shards?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface MergeSamplesResult {
  npz: string;
  numImages: number;
  resolution: number;
}

/**
 * Writes the run's .npz: arr_0 (num, R, R, 3) uint8 (images in index order, read back
 * from the PNGs and checked against the manifests' CRCs) and labels (num,) int64.
 * Fails, naming what is missing, unless every image exists.
 */
export async function mergeSamples(out: string, options: MergeSamplesOptions = {}): Promise<MergeSamplesResult> {
  const layout = sampleLayout(out, options.npz);
  const settings = await readSampleSettings(layout);
  const sources = [layout, ...(options.sources ?? []).map((d) => sampleLayout(d))];
  for (const s of sources.slice(1)) {
    const diff = settingsDiff(settings, await readSampleSettings(s));
    if (diff.length) throw new ValidationError(`${s.dir} holds another run than ${layout.dir} (${diff.join('; ')})`);
  }
  const N = settings.numImages;
  const R = settings.tokenizer.resolution;
  const where = new Array<string | undefined>(N);
  const known = new Map<number, number>();
  for (const s of sources) {
    for (const g of await listImages(s.images)) if (g < N && where[g] === undefined) where[g] = join(s.images, sampleImageName(g));
    for (const [g, crc] of await readManifests(s)) if (!known.has(g)) known.set(g, crc);
  }
  const missing: number[] = [];
  for (let g = 0; g < N; g++) if (where[g] === undefined) missing.push(g);
  if (missing.length) {
    const parts: string[] = [];
    if (options.shards && options.shards > 1) {
      for (let i = 0; i < options.shards; i++) {
        const [a, b] = shardRange(N, { index: i, count: options.shards });
        const m = missing.filter((g) => g >= a && g < b).length;
        if (m) parts.push(`shard ${i}/${options.shards} (images ${a}..${b - 1}) misses ${m}`);
      }
    }
    const first = missing.slice(0, 5).map(sampleImageName).join(', ');
    throw new SamplesIncompleteError(
      `${missing.length} of ${N} images are missing (${parts.length ? parts.join('; ') : `first: ${first}`}); run rargen sample-imagenet with the same settings (and --shard) to finish them`,
      missing.length,
    );
  }

  await mkdir(dirname(layout.npz), { recursive: true });
  await mkdir(layout.progress, { recursive: true });
  const release = await acquireLock(join(layout.progress, 'merge.lock'), `writing ${layout.npz}`);
  try {
    await removeStaleTemps(dirname(layout.npz), basename(layout.npz));
    const w = await NpzStreamWriter.open(layout.npz);
    try {
      await w.beginArray('arr_0', 'uint8', [N, R, R, 3]);
      const ahead = 8; // files read while one decodes
      const reads: Promise<Buffer>[] = [];
      const read = (g: number) => {
        const p = readFile(where[g]!);
        p.catch(() => undefined);
        reads[g] = p;
      };
      for (let g = 0; g < Math.min(ahead, N); g++) read(g);
      options.onProgress?.(0, N);
      for (let g = 0; g < N; g++) {
        if (options.signal?.aborted) throw abortError(options.signal);
        const path = where[g]!;
        const buf = await reads[g]!;
        delete reads[g];
        if (g + ahead < N) read(g + ahead);
        let img: RgbImage;
        try {
          img = decodePng(buf);
        } catch (e) {
          throw new Error(`${path}: ${(e as Error).message}; delete it and rerun rargen sample-imagenet to generate it again`);
        }
        if (img.width !== R || img.height !== R) throw new Error(`${path} is ${img.width}x${img.height}, expected ${R}x${R}; delete it and rerun rargen sample-imagenet`);
        const crc = known.get(g);
        if (crc !== undefined && crc !== crc32(img.data)) throw new Error(`${path} does not hold the pixels its manifest recorded (CRC mismatch); delete it and rerun rargen sample-imagenet to generate it again`);
        await w.write(img.data);
        if ((g + 1) % 64 === 0 || g + 1 === N) options.onProgress?.(g + 1, N);
      }
      await w.end();
      const labels = new BigInt64Array(N);
      for (let g = 0; g < N; g++) labels[g] = BigInt(sampleLabel(settings, g));
      await w.beginArray('labels', 'int64', [N]);
      await w.write(labels);
      await w.end();
      await w.close();
    } catch (e) {
      await w.abort();
      throw e;
    }
    await syncDir(dirname(layout.npz));
    const st = await stat(layout.npz);
    const rec: MergedRecord = { npz: layout.npz, bytes: st.size, mtimeMs: st.mtimeMs, numImages: N };
    await writeAtomic(join(layout.progress, 'merged.json'), Buffer.from(JSON.stringify(rec) + '\n'));
  } finally {
    await release();
  }
  return { npz: layout.npz, numImages: N, resolution: R };
}
