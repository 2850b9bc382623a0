// Checkpoint loading benchmark (issue 2). Writes a RAR-B-shaped state dict (~1 GB as
// float32, ~0.5 GB as float16) with saveTorch into a temp dir, then in a fresh child
// process per case loads every tensor with readFloat32 into Float32Arrays that stay
// alive (as model loading does) and reports throughput (warm page cache) and peak RSS
// (process.resourceUsage().maxRSS) against the size of the loaded weights. Prints one
// JSON object. Usage: node dist/bench/load.js [--depth 24] [--keep]
import { spawnSync } from 'node:child_process';
import { open, mkdtemp, rm, stat } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint, saveTorch, float32ToFloat16, type LazyTensor } from '../lib/io/index.js';
import type { DType } from '../lib/tensor.js';
import { expectedGeneratorTensors, PRESETS } from '../lib/config.js';
import { machine } from './_util.js';

/** RAR-B's state dict with `depth` blocks (the parameter table, lib/config.ts). */
function rarShapes(depth: number): [string, number[]][] {
  return [...expectedGeneratorTensors({ ...PRESETS['rar-b'].generator, depth })];
}

function lazy(shapes: [string, number[]][], dtype: DType): Map<string, LazyTensor> {
  const m = new Map<string, LazyTensor>();
  let seed = 1;
  for (const [name, shape] of shapes) {
    m.set(name, {
      dtype,
      shape,
      load: () => {
        const n = shape.reduce((a, b) => a * b, 1);
        const f = new Float32Array(n);
        let s = seed++ >>> 0;
        for (let i = 0; i < n; i++) {
          s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
          f[i] = (s / 4294967296 - 0.5) * 0.04;
        }
        return dtype === 'float16' ? float32ToFloat16(f) : f;
      },
    });
  }
  return m;
}

/** Read the whole file once through a small buffer, so the timed load runs from the page cache. */
async function warm(path: string): Promise<void> {
  const fh = await open(path, 'r');
  const buf = Buffer.allocUnsafe(16 << 20);
  let pos = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (!bytesRead) break;
    pos += bytesRead;
  }
  await fh.close();
}

interface ChildResult {
  tensors: number;
  weightsBytes: number;
  seconds: number;
  openSeconds: number;
  baselineRssBytes: number;
  peakRssBytes: number;
}

async function child(path: string): Promise<void> {
  const baselineRssBytes = process.resourceUsage().maxRSS * 1024;
  await warm(path);
  const t0 = process.hrtime.bigint();
  const ck = await openCheckpoint(path);
  const t1 = process.hrtime.bigint();
  const kept: Float32Array[] = [];
  let weightsBytes = 0;
  for (const name of ck.tensors.keys()) {
    const a = await ck.readFloat32(name);
    kept.push(a);
    weightsBytes += a.byteLength;
  }
  await ck.close();
  const t2 = process.hrtime.bigint();
  const r: ChildResult = {
    tensors: kept.length,
    weightsBytes,
    seconds: Number(t2 - t0) / 1e9,
    openSeconds: Number(t1 - t0) / 1e9,
    baselineRssBytes,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
  };
  process.stdout.write(JSON.stringify(r));
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') return child(args[1]!);
  const depth = args.includes('--depth') ? Number(args[args.indexOf('--depth') + 1]) : 24;
  const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 3;
  const dir = await mkdtemp(join(tmpdir(), 'rargen-bench-load-'));
  const cases = [];
  try {
    for (const dtype of ['float32', 'float16'] as const) {
      const path = join(dir, `rar-b-${dtype}.bin`);
      const w0 = process.hrtime.bigint();
      await saveTorch(path, lazy(rarShapes(depth), dtype));
      const writeSeconds = Number(process.hrtime.bigint() - w0) / 1e9;
      const fileBytes = (await stat(path)).size;
      await warm(path);
      let best: ChildResult | null = null;
      let peak = 0;
      for (let r = 0; r < runs; r++) {
        const res = spawnSync(process.execPath, [process.argv[1]!, '--child', path], { encoding: 'utf8', maxBuffer: 1 << 20 });
        if (res.status !== 0) throw new Error(`bench child failed: ${res.stderr}`);
        const c = JSON.parse(res.stdout) as ChildResult;
        peak = Math.max(peak, c.peakRssBytes);
        if (!best || c.seconds < best.seconds) best = c;
      }
      const b = best!;
      cases.push({
        dtype,
        tensors: b.tensors,
        fileBytes,
        weightsBytes: b.weightsBytes,
        writeSeconds: +writeSeconds.toFixed(3),
        writeGBps: +(fileBytes / writeSeconds / 1e9).toFixed(2),
        loadSeconds: +b.seconds.toFixed(3),
        openSeconds: +b.openSeconds.toFixed(4),
        fileGBps: +(fileBytes / b.seconds / 1e9).toFixed(2),
        weightsGBps: +(b.weightsBytes / b.seconds / 1e9).toFixed(2),
        baselineRssBytes: b.baselineRssBytes,
        peakRssBytes: peak,
        peakRssOverWeights: +(peak / b.weightsBytes).toFixed(3),
      });
      await rm(path);
    }
  } finally {
    if (!args.includes('--keep')) await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(
    JSON.stringify({
      bench: 'load',
      ...machine(),
      depth,
      runs,
      cases,
    }) + '\n',
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
