// Shared by the test/mpi files: every rank is a real `node cli.js ...` process under
// Open MPI's mpirun, running the TypeScript compiled into build-dist-test/ (ignored by
// git). The compile runs once for all files (a lock folder; it is redone when a lib/
// file is newer than the last one). Skipped, saying so, where mpirun is absent (CI
// installs Open MPI in .ci/run).
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../../lib/native.js';

export const ROOT = join(import.meta.dirname, '..', '..');
const OUT = join(ROOT, 'build-dist-test');
export const CLI = join(OUT, 'lib', 'cli.js');
const STAMP = join(OUT, '.compiled');
const LOCK = join(ROOT, 'build-dist-test.lock');

export const hasMpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
const hasDist = typeof (native() as unknown as { distInit?: unknown }).distInit === 'function';
if (!hasMpirun) console.warn('test/mpi: mpirun not found (install Open MPI: apt-get install openmpi-bin libopenmpi-dev); skipping the MPI tests');
export const canRun = hasMpirun && hasDist;

// Open MPI refuses root without these; 2 ranks on a 2-core (or smaller) machine need --oversubscribe.
export const ENV = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', RARGEN_DEBUG: '' };
export const MPIRUN = ['--oversubscribe', '--bind-to', 'none'];

function newestSource(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestSource(p) : statSync(p).mtimeMs);
  }
  return t;
}

/** Compiles lib/ into build-dist-test/ unless it is up to date (one process at a time). */
export async function compileCli(): Promise<void> {
  const upToDate = () => existsSync(STAMP) && existsSync(CLI) && statSync(STAMP).mtimeMs >= newestSource(join(ROOT, 'lib'));
  for (let i = 0; ; i++) {
    if (upToDate()) return;
    try {
      mkdirSync(LOCK);
    } catch {
      // another test file compiles; a lock older than 5 minutes is left from a killed run
      if (existsSync(LOCK) && Date.now() - statSync(LOCK).mtimeMs > 300_000) rmSync(LOCK, { recursive: true, force: true });
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    try {
      try {
        execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json'), '--outDir', OUT], { cwd: ROOT, stdio: 'pipe' });
      } catch {
        /* type errors still emit; the CLI must exist */
      }
      if (!existsSync(CLI)) throw new Error('tsc did not produce build-dist-test/lib/cli.js');
      writeFileSync(STAMP, '');
    } finally {
      rmSync(LOCK, { recursive: true, force: true });
    }
  }
}

/** `mpirun` with the test options; output and seconds. */
export function mpirun(args: string[], opts: { timeout?: number; env?: NodeJS.ProcessEnv } = {}) {
  const t0 = performance.now();
  const r = spawnSync('mpirun', [...MPIRUN, ...args], { cwd: ROOT, encoding: 'utf8', env: opts.env ?? ENV, timeout: opts.timeout ?? 120_000 });
  return { code: r.status, out: r.stdout + r.stderr, stdout: r.stdout, stderr: r.stderr, seconds: (performance.now() - t0) / 1000, error: r.error };
}

/** One plain process of the CLI. */
export function cli(args: string[], opts: { timeout?: number; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', env: opts.env ?? ENV, timeout: opts.timeout ?? 120_000 });
  return { code: r.status, out: r.stdout + r.stderr, stdout: r.stdout, stderr: r.stderr };
}
