// rargen fid-table: the paper's FID table (lib/paper.ts) beside the numbers measured
// on whichever sample sets are present (DIR/rar_b.npz ... DIR/rar_xxl.npz, as
// `rargen sample-imagenet --out rar_b` writes them), with lib/fid.ts's evaluateNpz.
// Each measurement is cached in DIR/rar_b.fid.json, keyed by the size and mtime of the
// sample and reference files, so a rerun is instant; without a reference batch the
// cached numbers are still shown.
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { evaluateNpz, type EvaluateProgress, type EvaluateResult } from '../fid.js';
import { findInceptionWeights } from '../inception.js';
import { DeviceSpecSchema, type DeviceSpec } from '../device.js';
import { writeFileAtomic } from '../io/file.js';
import { PAPER_ARXIV, PAPER_MODELS, PAPER_NUM_SAMPLES, REFERENCE_BATCH, type PaperModel } from '../paper.js';
import { ProgressBar } from '../progress.js';
import { intOption, note, parseCommandArgs, UsageError, helpShown, STRING, BOOLEAN, RUN_OPTIONS } from './_shared.js';

export const summary = "the paper's FID table beside the FIDs measured on the sample .npz files present";

const USAGE = `Usage: rargen fid-table [--ref ${REFERENCE_BATCH}] [--dir DIR] [options]

Prints the paper's FID-50k (arXiv ${PAPER_ARXIV}) of RAR-B/L/XL/XXL beside the
metrics of DIR/rar_b.npz, DIR/rar_l.npz, DIR/rar_xl.npz, DIR/rar_xxl.npz (those
present; write them with rargen sample-imagenet --out DIR/rar_b ...), computed as
rargen fid does. Results are cached in DIR/rar_b.fid.json etc. (keyed by the
size and mtime of both .npz files), so a rerun is instant.

Options:
  --ref FILE         ADM's reference batch (default: ${REFERENCE_BATCH} in DIR or
                     the current folder; without one only cached numbers show)
  --dir DIR          where the sample .npz files are (default .)
  --recompute        ignore the cache
  --inception FILE   Inception weights (default: the cache folder)
  --device D         auto, cpu, cuda or cuda:N (default auto)
  --batch-size N     images per Inception batch (default 32)
  --threads N        CPU threads (default: all)
  --json             print the table as JSON
  -h, --help         show this help`;

/** Identity of a file for the cache. */
interface FileKey {
  file: string;
  bytes: number;
  mtimeMs: number;
}

export interface Metrics {
  fid: number;
  sfid: number;
  inceptionScore: number;
  precision: number;
  recall: number;
  sampleImages: number;
  referenceImages: number;
}

interface CacheEntry {
  sample: FileKey;
  ref: FileKey;
  metrics: Metrics;
  measuredAt: string;
}

interface CacheFile {
  format: 'rargen-fid-cache/1';
  entries: CacheEntry[];
}

export interface TableRow {
  preset: string;
  checkpoint: string;
  params: string;
  paper: { fid: number };
  /** The sample .npz, when present. */
  npz: string | null;
  measured: Metrics | null;
  /** Whether `measured` came from the cache. */
  cached: boolean;
  /** Reference batch of `measured`. */
  ref: string | null;
  /** Why there is no measurement, or a caveat about it. */
  note: string | null;
  /** The evaluator failed (see note). */
  error?: boolean;
}

async function fileKey(path: string): Promise<FileKey> {
  const st = await stat(path);
  return { file: basename(path), bytes: st.size, mtimeMs: st.mtimeMs };
}
const sameFile = (a: FileKey, b: FileKey) => a.bytes === b.bytes && a.mtimeMs === b.mtimeMs;

/** Where model m's cached metrics are. */
export function cachePath(dir: string, m: PaperModel): string {
  return join(dir, `${m.checkpoint}.fid.json`);
}

async function readCache(path: string): Promise<CacheEntry[]> {
  try {
    const c = JSON.parse(await readFile(path, 'utf8')) as CacheFile;
    return c?.format === 'rargen-fid-cache/1' && Array.isArray(c.entries) ? c.entries : [];
  } catch {
    return []; // none yet, or unreadable: measured again
  }
}

async function writeCache(path: string, entries: CacheEntry[]): Promise<void> {
  await writeFileAtomic(path, JSON.stringify({ format: 'rargen-fid-cache/1', entries } satisfies CacheFile, null, 1) + '\n');
}

export interface TableOptions {
  dir: string;
  ref?: string;
  recompute?: boolean;
  /** Runs the evaluator (default evaluateNpz with the weights found by findInceptionWeights). */
  evaluate?: (ref: string, sample: string) => Promise<EvaluateResult>;
}

/** The rows of the table: paper figures, and cached or newly measured metrics. */
export async function fidTable(o: TableOptions): Promise<TableRow[]> {
  const dir = resolve(o.dir);
  const refKey = o.ref ? await fileKey(o.ref) : undefined;
  const rows: TableRow[] = [];
  for (const m of PAPER_MODELS) {
    const row: TableRow = { preset: m.preset, checkpoint: m.checkpoint, params: m.params, paper: { fid: m.fid }, npz: null, measured: null, cached: false, ref: null, note: null };
    rows.push(row);
    const npz = join(dir, `${m.checkpoint}.npz`);
    if (!existsSync(npz)) {
      row.note = `no ${m.checkpoint}.npz in ${dir}`;
      continue;
    }
    row.npz = npz;
    const sampleKey = await fileKey(npz);
    const cache = cachePath(dir, m);
    const entries = (await readCache(cache)).filter((e) => sameFile(e.sample, sampleKey));
    const hit = o.recompute ? undefined : refKey ? entries.find((e) => sameFile(e.ref, refKey)) : entries.at(-1);
    if (hit) {
      Object.assign(row, { measured: hit.metrics, cached: true, ref: hit.ref.file });
    } else if (!o.ref) {
      row.note = `not measured: no reference batch (pass --ref ${REFERENCE_BATCH})`;
      continue;
    } else {
      let r: EvaluateResult;
      try {
        r = await (o.evaluate ?? ((ref, sample) => evaluateNpz(ref, sample)))(o.ref, npz);
      } catch (e) {
        row.note = `not measured: ${(e as Error).message}`;
        row.error = true;
        continue;
      }
      const metrics: Metrics = { fid: r.fid, sfid: r.sfid, inceptionScore: r.inceptionScore, precision: r.precision, recall: r.recall, sampleImages: r.sampleImages, referenceImages: r.referenceImages };
      Object.assign(row, { measured: metrics, ref: refKey!.file });
      // Re-stat: the files may have been replaced while the evaluator ran.
      if (sameFile(await fileKey(npz), sampleKey) && sameFile(await fileKey(o.ref), refKey!))
        await writeCache(cache, [...entries.filter((e) => !sameFile(e.ref, refKey!)), { sample: sampleKey, ref: refKey!, metrics, measuredAt: new Date().toISOString() }].slice(-8));
    }
    if (row.measured && row.measured.sampleImages !== PAPER_NUM_SAMPLES)
      row.note = `${row.measured.sampleImages} samples, not the paper's ${PAPER_NUM_SAMPLES}: not comparable`;
  }
  return rows;
}

const fmt = (v: number | undefined, digits: number) => (v === undefined || !Number.isFinite(v) ? '' : v.toFixed(digits));

/** The table as text. */
export function formatTable(rows: readonly TableRow[]): string {
  const head = ['model', 'params', 'FID (paper)', 'FID (measured)', 'sFID', 'IS', 'precision', 'recall', 'samples'];
  const body = rows.map((r) => {
    const m = r.measured ?? undefined;
    return [r.preset, r.params, r.paper.fid.toFixed(2), m ? fmt(m.fid, 2) : 'not measured', fmt(m?.sfid, 2), fmt(m?.inceptionScore, 1), fmt(m?.precision, 3), fmt(m?.recall, 3), m ? String(m.sampleImages) : ''];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const notes = rows.filter((r) => r.note || r.cached).map((r) => `  ${r.preset}: ${[r.note, r.cached ? `cached (against ${r.ref})` : null].filter(Boolean).join('; ')}`);
  return [
    `RAR, class-conditional ImageNet 256x256, FID-50k (paper: arXiv ${PAPER_ARXIV}; measured: ADM's evaluator via rargen fid)`,
    '',
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
    ...(notes.length ? ['', ...notes] : []),
  ].join('\n') + '\n';
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, { ref: STRING, dir: STRING, recompute: BOOLEAN, inception: STRING, threads: STRING, json: BOOLEAN, ...RUN_OPTIONS }, false);
  if (helpShown(values, USAGE)) return 0;
  const dir = values.dir ?? '.';
  if (!existsSync(dir)) throw new UsageError(`--dir ${dir} does not exist`);
  const device = values.device ?? 'auto';
  if (!DeviceSpecSchema.safeParse(device).success) throw new UsageError(`--device expects auto, cpu, cuda or cuda:N but received ${JSON.stringify(device)}`);
  const batchSize = intOption(values['batch-size'], '--batch-size', 1);
  const threads = intOption(values.threads, '--threads', 0);
  let ref = values.ref;
  if (ref !== undefined && !existsSync(ref)) throw new UsageError(`--ref ${ref} does not exist`);
  ref ??= [join(dir, REFERENCE_BATCH), REFERENCE_BATCH].find((p) => existsSync(p));

  let inception: string | undefined;
  const evaluate = async (refPath: string, sample: string) => {
    inception ??= findInceptionWeights(values.inception);
    let bar: ProgressBar | undefined;
    let stage: EvaluateProgress['stage'] | undefined;
    note(`rargen fid-table: measuring ${sample} against ${refPath}`);
    try {
      return await evaluateNpz(refPath, sample, {
        inception,
        device: device as DeviceSpec,
        batchSize,
        threads,
        onProgress: (p) => {
          if (p.stage !== stage) {
            bar?.finish();
            stage = p.stage;
            bar = new ProgressBar(p.total, { label: `${basename(sample)} ${p.stage}`, unit: p.stage === 'reference' || p.stage === 'sample' ? 'img' : 'step' });
          }
          bar!.update(p.done, p.total);
        },
      });
    } finally {
      bar?.finish();
    }
  };
  const rows = await fidTable({ dir, ref, recompute: values.recompute, evaluate });
  process.stdout.write(values.json ? JSON.stringify({ paper: `arXiv:${PAPER_ARXIV}`, dir: resolve(dir), ref: ref ? resolve(ref) : null, models: rows }, null, 1) + '\n' : formatTable(rows));
  return rows.some((r) => r.error) ? 1 : 0;
}
