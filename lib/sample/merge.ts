// Sampling runs, part 4 of lib/sample: mergeSamples, which streams every image of a run
// (from its folder and those of shards run elsewhere) in index order into the .npz,
// checking each against its manifest's CRC, under the merge lock.
import { mkdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { decodePng, type RgbImage } from '../image.js';
import { NpzStreamWriter } from '../io/index.js';
import { crc32 } from '../io/crc32.js';
import { removeStaleTemps, syncDir, writeFileAtomic } from '../io/file.js';
import { SamplesIncompleteError, ValidationError } from '../errors.js';
import { abortError } from '../validate.js';
import { sampleImageName, sampleLabel, sampleLayout, shardRange, type SampleLayout, type SampleSettings } from './plan.js';
import { acquireLock, listImages, readJson, readManifests, readSampleSettings, settingsDiff } from './resume.js';

interface MergedRecord {
  npz: string;
  bytes: number;
  mtimeMs: number;
  numImages: number;
}

/** Whether layout.npz is the one the last merge of this run wrote (same size and mtime). */
export async function npzUpToDate(layout: SampleLayout, settings: SampleSettings): Promise<boolean> {
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
    await writeFileAtomic(join(layout.progress, 'merged.json'), JSON.stringify(rec) + '\n');
  } finally {
    await release();
  }
  return { npz: layout.npz, numImages: N, resolution: R };
}

