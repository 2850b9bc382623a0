// Runs fuzz cases in child processes so that a crash, a hang or a memory blow-up is
// observed instead of taking the test runner down. A child runs a batch of cases
// (test/fuzz/*-child.ts, under vite-node) and reports each on stdout:
//   S <n>                       case n starts
//   E <n> <outcome> [detail]    case n ended: loaded | clean | unclean | overmem
//   D                           the batch is done
//   R <n>                       stopping early (peak RSS is sticky): resume at case n
// The parent watches the case in flight: past the per-case timeout it kills the child
// (a hang), past the RSS cap it kills it (over-memory: VmRSS polled, plus the child's
// own peak-RSS check after each case and V8's heap limit, --max-old-space-size); a
// child that dies on its own mid-case crashed. After a crash the cases of the batch up
// to the crash are re-run one per child, to name the case that crashes alone (a crash
// can surface a case late, e.g. memory freed under a worker). Then the batch resumes
// after the crashed case.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');
const VITE_NODE = join(ROOT, 'node_modules', 'vite-node', 'vite-node.mjs');

export interface FuzzOptions {
  /** Child script (absolute path). */
  script: string;
  /** Extra argv for the child after (seed, from, to). */
  args?: string[];
  seed: number;
  cases: number;
  /** Cases per child. */
  batch: number;
  /** Per-case timeout. */
  timeoutMs: number;
  /** Peak RSS growth a case may cause in the child (MiB), checked by the child. */
  memCapMb: number;
  /** Absolute RSS at which the parent kills the child (MiB). */
  killRssMb: number;
  /** V8 heap limit of the child (MiB). */
  heapMb?: number;
  env?: Record<string, string>;
  /** Parallel children (default 1). */
  parallel?: number;
}

export interface Finding {
  n: number;
  detail: string;
}

export interface FuzzSummary {
  cases: number;
  loaded: number;
  clean: number;
  unclean: Finding[];
  crashes: Finding[];
  hangs: Finding[];
  overMemory: Finding[];
  ms: number;
}

interface BatchResult {
  ended: Map<number, { outcome: string; detail: string }>;
  /** How the child ended when it did not finish: the case in flight and why. */
  failure?: { n: number; kind: 'crash' | 'hang' | 'overmem'; detail: string };
  /** Last case that started. */
  last: number;
  restartAt?: number;
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** One child over cases [from, to). */
function runChild(o: FuzzOptions, from: number, to: number): Promise<BatchResult> {
  return new Promise((resolve) => {
    const nodeArgs = ['--expose-gc', `--max-old-space-size=${o.heapMb ?? 512}`, VITE_NODE, o.script, String(o.seed), String(from), String(to), ...(o.args ?? [])];
    const child = spawn(process.execPath, nodeArgs, {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...o.env, FUZZ_MEM_CAP_MB: String(o.memCapMb) },
    });
    const res: BatchResult = { ended: new Map(), last: from - 1 };
    let inflight: { n: number; t0: number } | null = null;
    let done = false;
    let killedFor: BatchResult['failure'] | undefined;
    let buf = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      stderr = (stderr + d).slice(-4000);
    });
    child.stdout.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const m = /^([SEDR])(?: (\d+))?(?: (\w+))?(?: (.*))?$/.exec(line);
        if (!m) continue;
        if (m[1] === 'S') {
          inflight = { n: Number(m[2]), t0: Date.now() };
          res.last = inflight.n;
        } else if (m[1] === 'E') {
          res.ended.set(Number(m[2]), { outcome: m[3]!, detail: m[4] ?? '' });
          inflight = null;
        } else if (m[1] === 'R') {
          res.restartAt = Number(m[2]);
          done = true;
        } else done = true;
      }
    });
    const timer = setInterval(() => {
      if (killedFor || child.exitCode !== null) return;
      const cur = inflight as { n: number; t0: number } | null;
      const n = cur ? cur.n : res.last + 1;
      if (cur && Date.now() - cur.t0 > o.timeoutMs) {
        killedFor = { n, kind: 'hang', detail: `no result after ${o.timeoutMs} ms` };
        child.kill('SIGKILL');
        return;
      }
      const rss = rssMb(child.pid!);
      if (rss > o.killRssMb) {
        killedFor = { n, kind: 'overmem', detail: `RSS ${rss.toFixed(0)} MiB > ${o.killRssMb} MiB` };
        child.kill('SIGKILL');
      }
    }, 50);
    child.on('close', (code, signal) => {
      clearInterval(timer);
      if (killedFor) res.failure = killedFor;
      else if (!done) {
        const n = inflight ? (inflight as { n: number }).n : res.last + 1;
        const heap = /heap out of memory|Allocation failed/i.test(stderr);
        res.failure = {
          n,
          kind: heap ? 'overmem' : 'crash',
          detail: `child exited with ${signal ?? `code ${code}`}: ${stderr.trim().split('\n').slice(-3).join(' | ').slice(0, 400)}`,
        };
      }
      resolve(res);
    });
  });
}

/** Runs cases [0, o.cases) and tallies the outcomes. */
export async function runFuzz(o: FuzzOptions): Promise<FuzzSummary> {
  const t0 = Date.now();
  const sum: FuzzSummary = { cases: o.cases, loaded: 0, clean: 0, unclean: [], crashes: [], hangs: [], overMemory: [], ms: 0 };
  const tally = (r: BatchResult): void => {
    for (const [n, e] of r.ended) {
      if (e.outcome === 'loaded') sum.loaded++;
      else if (e.outcome === 'clean') sum.clean++;
      else if (e.outcome === 'overmem') sum.overMemory.push({ n, detail: e.detail });
      else sum.unclean.push({ n, detail: e.detail });
    }
  };
  const runRange = async (from: number, to: number): Promise<void> => {
    let start = from;
    while (start < to) {
      const r = await runChild(o, start, to);
      tally(r);
      if (!r.failure) {
        if (r.restartAt === undefined || r.restartAt >= to) return;
        start = r.restartAt;
        continue;
      }
      const f = r.failure;
      if (f.kind === 'hang') sum.hangs.push({ n: f.n, detail: f.detail });
      else if (f.kind === 'overmem') sum.overMemory.push({ n: f.n, detail: f.detail });
      else {
        // name the case: re-run this child's cases up to the crash one per child
        const named: Finding[] = [];
        for (let n = start; n <= f.n && n < to; n++) {
          const alone = await runChild(o, n, n + 1);
          if (alone.failure?.kind === 'crash') named.push({ n, detail: alone.failure.detail });
        }
        if (named.length) sum.crashes.push(...named);
        else sum.crashes.push({ n: f.n, detail: `${f.detail} (does not crash when run alone)` });
      }
      start = f.n + 1;
    }
  };
  const ranges: [number, number][] = [];
  for (let s = 0; s < o.cases; s += o.batch) ranges.push([s, Math.min(o.cases, s + o.batch)]);
  const par = Math.max(1, o.parallel ?? 1);
  let next = 0;
  await Promise.all(
    Array.from({ length: par }, async () => {
      while (next < ranges.length) {
        const [a, b] = ranges[next++]!;
        await runRange(a, b);
      }
    }),
  );
  sum.ms = Date.now() - t0;
  return sum;
}

/** "cases, clean errors, crashes, hangs, over-memory" in one line. */
export function summaryLine(name: string, s: FuzzSummary, seed: number): string {
  return (
    `fuzz ${name}: ${s.cases} cases, ${s.clean} clean errors, ${s.loaded} loaded, ${s.unclean.length} unclean errors, ` +
    `${s.crashes.length} crashes, ${s.hangs.length} hangs, ${s.overMemory.length} over-memory (seed ${seed}, ${(s.ms / 1000).toFixed(1)} s)`
  );
}
