// Sampling runs, part 3 of lib/sample: sampleImageNet, which generates a shard's missing
// images batch by batch (the next batch samples while this one is encoded and written),
// then writes the .npz when the whole run is there.
import { z } from 'zod';
import { mkdir, stat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { checkPair, decode, generate, generatorSchema, samplingFields, tokenizerSchema, type Generator, type Tokenizer } from '../generate.js';
import { encodePngAsync, type RgbImage } from '../image.js';
import { crc32 } from '../io/crc32.js';
import { removeStaleTemps, syncDir, writeFileAtomic } from '../io/file.js';
import { SampleLockedError } from '../errors.js';
import { abortError, boolSchema, fnSchema, intAtLeast, intBetween, parseOptions, pathSchema, signalSchema } from '../validate.js';
import { planBatches, sampleImageName, sampleLabel, sampleLayout, shardName, shardRange, type SampleLayout, type SampleSettings, type Shard } from './plan.js';
import { acquireLock, checkPng, ensureRunFile, listImages, rargenVersion, readManifests, writeManifest } from './resume.js';
import { mergeSamples, npzUpToDate } from './merge.js';

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

/**
 * Samples the images of the run in `out` that do not exist yet (this shard's), and
 * writes the .npz when the whole run is there. Resumable: see the top of this file.
 */
export async function sampleImageNet(options: SampleImageNetOptions): Promise<SampleResult> {
  const base = parseOptions(
    z.looseObject(
      {
        generator: generatorSchema,
        tokenizer: tokenizerSchema,
      },
      { error: 'an options object' },
    ),
    options,
    'sampleImageNet',
  );
  const gen = base.generator;
  const tok = base.tokenizer;
  const K = gen.config.numClasses;
  const o = parseOptions(
    z.strictObject({
      generator: z.unknown(),
      tokenizer: z.unknown(),
      out: pathSchema('a folder path string'),
      npz: pathSchema().optional(),
      classes: z.array(intBetween(0, K - 1), { error: 'a non-empty array of class ids' }).min(1, { error: 'a non-empty array of class ids' }).optional(),
      numPerClass: intAtLeast(1).optional(),
      ...samplingFields,
      batchSize: intAtLeast(1).optional(),
      decodeBatchSize: intAtLeast(1).optional(),
      shard: z.strictObject({ index: intAtLeast(0), count: intAtLeast(1) }, { error: 'a shard {index, count}' }).refine((s) => s.index < s.count, { error: 'a shard {index, count} with index < count' }).optional(),
      merge: boolSchema.optional(),
      signal: signalSchema.optional(),
      onProgress: fnSchema<(p: SampleProgress) => void>().optional(),
      onBatchWritten: fnSchema<(b: SampleBatchInfo) => void | Promise<void>>().optional(),
      onNote: fnSchema<(m: string) => void>().optional(),
      onMergeProgress: fnSchema<(d: number, t: number) => void>().optional(),
    }),
    options,
    'sampleImageNet',
  );
  checkPair(gen, tok, 'sampleImageNet');

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
        writes.push(encodePngAsync(img).then((png) => writeFileAtomic(path, png, false)));
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

