// What the bench scripts share: their `--name value` options, the generator shape options
// of the training benchmarks, the machine fields of their JSON line and the run of a
// PyTorch peer script (bench/peers/).
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../lib/native.js';

type Defaults = Record<string, string | boolean>;
type Values<D extends Defaults> = { [K in keyof D]: D[K] extends boolean ? boolean : string };

/**
 * The command line as options with these defaults (a string default: `--name value`, a
 * boolean one: a flag; an unknown option is refused by parseArgs), with `num(name)`
 * reading one as a number and `nums(name)` a comma-separated list of numbers.
 */
export function benchArgs<D extends Defaults>(defaults: D) {
  const options = Object.fromEntries(
    Object.entries(defaults).map(([k, d]) => [k, typeof d === 'boolean' ? { type: 'boolean' as const, default: d } : { type: 'string' as const, default: d }]),
  );
  const values = parseArgs({ options }).values as Values<D>;
  const num = (k: keyof D & string) => Number(values[k]);
  const nums = (k: keyof D & string) => String(values[k]).split(',').filter(Boolean).map(Number);
  return { values, num, nums };
}

/** The generator shape of bench/train.ts and bench/train-dist.ts (the same defaults), with the batch. */
export const RAR_SHAPE_OPTIONS = {
  hidden: '128',
  depth: '4',
  heads: '4',
  mlp: '512',
  'seq-len': '256',
  vocab: '16',
  classes: '10',
} as const;
/** [C, L, H, I, N, V, K, B]: hidden, depth, heads, mlp, seq-len, vocab, classes, batch. */
export function rarShape(num: (k: keyof typeof RAR_SHAPE_OPTIONS | 'batch') => number): number[] {
  return (['hidden', 'depth', 'heads', 'mlp', 'seq-len', 'vocab', 'classes', 'batch'] as const).map((k) => num(k));
}

/** The fields of every bench JSON line that say when and where it ran. */
export function machine() {
  return { date: new Date().toISOString(), node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model };
}

/**
 * Runs bench/peers/<script> with `python` and these arguments; its last stdout line is
 * its JSON result. A failure is `{ error }` with the last `errorLines` lines of its stderr.
 */
export function runPeer(
  python: string,
  script: string,
  args: string[],
  opts: { errorLines?: number; env?: SpawnSyncOptions['env'] } = {},
): Record<string, unknown> | { error: string } {
  const r = spawnSync(python, [join(packageRoot(), 'bench', 'peers', script), ...args], { encoding: 'utf8', maxBuffer: 1 << 24, env: opts.env });
  if (r.status !== 0)
    return { error: (r.stderr || r.error?.message || 'failed').trim().split('\n').slice(-(opts.errorLines ?? 1)).join(' ') };
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}
