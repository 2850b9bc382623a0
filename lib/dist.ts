// Multi-process runs over MPI (docs/distributed-training.md): data-parallel training
// (lib/train/loop.ts), sample-imagenet's shards and fid's Inception passes under
// `mpirun -np N rargen ...`.
//
// Each process finds its rank and the world size in the environment mpirun sets
// (OMPI_COMM_WORLD_RANK/SIZE, PMIX_RANK), so a plain `rargen train` never loads MPI.
// Under mpirun the addon opens Open MPI's libmpi.so.40 at run time (src/binding_dist.cc;
// the addon links no MPI). The collectives the commands need are here: the gradient
// mean (one flat buffer, in buckets, native: NCCL on GPUs, MPI on CPUs), sums/maxima
// of a few doubles (loss, counts, the stop flag), an all-gather of short strings
// (config check, data positions for checkpoints), a gather of float rows to rank 0
// (fid's features) and barriers. Every one of them runs under the hang watch of
// src/dist/mpi.h: RARGEN_DIST_TIMEOUT seconds without progress end the job, naming
// the rank that is missing.
import { createHash } from 'node:crypto';
import { native } from './native.js';
import type { DeviceSpec } from './device.js';

interface DistAddon {
  distInit(o?: { timeout: number; bucketMB: number }): { rank: number; size: number; library: string; timeout: number; heartbeat: number };
  distAllreduce(data: Float64Array, op?: 'sum' | 'max'): void;
  distAllgather(data: Uint8Array): Uint8Array;
  distGatherF32(data: Float32Array): Float32Array | undefined;
  distBarrier(patient?: boolean): void;
  distHeartbeat(): void;
  distFinalize(): void;
  distNcclProbe(): { built: boolean; version: number };
}

/** The RARGEN_DIST_* settings and the local rank, parsed once (bad values are errors naming the variable). */
export interface DistSettings {
  /** RARGEN_DIST_TIMEOUT: seconds a collective may wait for a rank before the job is ended (default 300). */
  timeout: number;
  /** RARGEN_DIST_BUCKET_MB: megabytes per gradient all-reduce bucket on GPUs (default 25, as PyTorch DDP). */
  bucketMB: number;
  /** RARGEN_DIST_BACKEND: how gradients are reduced: auto (NCCL on GPUs, MPI on CPUs), nccl or mpi. */
  backend: 'auto' | 'nccl' | 'mpi';
  /** RARGEN_DIST_OVERLAP: 1 (default) starts each gradient bucket's all-reduce as soon as backward has made it final; 0 after backward (the same buckets in the same order: bit-identical). */
  overlap: boolean;
  /** The rank within its node: OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID or LOCAL_RANK (null when none is set). */
  localRank: number | null;
}

export function distSettings(env: NodeJS.ProcessEnv = process.env): DistSettings {
  const num = (name: string, def: number, min: number, max: number): number => {
    const v = env[name];
    if (v === undefined || v === '') return def;
    const x = Number(v);
    if (!/^\s*[0-9.eE+]+\s*$/.test(v) || !Number.isFinite(x) || x < min || x > max)
      throw new Error(`rargen: ${name} must be a number between ${min} and ${max} but is ${JSON.stringify(v)}`);
    return x;
  };
  const backend = env.RARGEN_DIST_BACKEND || 'auto';
  if (backend !== 'auto' && backend !== 'nccl' && backend !== 'mpi')
    throw new Error(`rargen: RARGEN_DIST_BACKEND must be auto, nccl or mpi but is ${JSON.stringify(backend)}`);
  const ov = env.RARGEN_DIST_OVERLAP || '1';
  if (ov !== '0' && ov !== '1') throw new Error(`rargen: RARGEN_DIST_OVERLAP must be 0 or 1 but is ${JSON.stringify(ov)}`);
  let localRank: number | null = null;
  for (const name of ['OMPI_COMM_WORLD_LOCAL_RANK', 'SLURM_LOCALID', 'LOCAL_RANK']) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    if (!/^\d+$/.test(v)) throw new Error(`rargen: ${name} must be a rank number (0, 1, ...) but is ${JSON.stringify(v)}`);
    localRank = Number(v);
    break;
  }
  return { timeout: num('RARGEN_DIST_TIMEOUT', 300, 0.1, 1e7), bucketMB: num('RARGEN_DIST_BUCKET_MB', 25, 1, 4096), backend, overlap: ov === '1', localRank };
}

/**
 * The device of one rank: under a launcher with several ranks, 'cuda' (and 'auto' when
 * it resolves to a GPU) becomes cuda:LOCAL_RANK, one GPU per process; where the
 * launcher gave each process one visible GPU (srun --gpus-per-task=1, or
 * CUDA_VISIBLE_DEVICES per rank), cuda:0. An explicit cuda:N and 'cpu' are kept.
 */
export function rankDevice(spec: DeviceSpec, world: { size: number; localRank: number | null }, visibleGpus: () => number): DeviceSpec {
  if (world.size <= 1 || world.localRank === null || (spec !== 'cuda' && spec !== 'auto')) return spec;
  const n = visibleGpus();
  if (n === 0) return spec; // auto: the CPU; cuda: resolveDevice says why CUDA cannot be used
  if (n === 1) return 'cuda:0';
  if (world.localRank >= n)
    throw new Error(
      `rargen: this is local rank ${world.localRank} but only ${n} GPUs are visible (cuda:0..cuda:${n - 1}); ` +
        'start at most one rank per GPU on each node (mpirun --map-by ppr:<gpus>:node, srun --ntasks-per-node=<gpus>)',
    );
  return `cuda:${world.localRank}`;
}

/** Whether NCCL can be loaded: its version, or the error saying how to install it (no GPU or MPI needed). */
export function ncclProbe(): { built: boolean; version: number } {
  const a = native() as unknown as Partial<DistAddon>;
  if (typeof a.distNcclProbe !== 'function') throw new Error('rargen: this build of the native addon has no NCCL support (src/dist/nccl.cc); rebuild with `npm run build:native`');
  return a.distNcclProbe();
}

/** Rank and world size from mpirun's environment, or null when not launched by an MPI launcher. */
export function worldFromEnv(env: NodeJS.ProcessEnv = process.env): { rank: number; size: number; launcher: string } | null {
  const num = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : null);
  // srun --mpi=pmix sets PMIX_RANK but no size variable of PMIx: Slurm's task count is the size
  const slurm = env.PMIX_RANK !== undefined ? num(env.SLURM_NTASKS) : null;
  const size = num(env.OMPI_COMM_WORLD_SIZE) ?? num(env.PMIX_SIZE) ?? num(env.PMI_SIZE) ?? slurm;
  const rank = num(env.OMPI_COMM_WORLD_RANK) ?? num(env.PMIX_RANK) ?? num(env.PMI_RANK);
  if (size === null || rank === null) return null;
  return { rank, size, launcher: env.OMPI_COMM_WORLD_SIZE !== undefined ? 'Open MPI' : env.PMI_SIZE !== undefined ? 'PMI (MPICH?)' : 'PMIx' };
}

/** The process group of a run: a single process (size 1, no MPI) or N MPI ranks. */
export class Dist {
  #timer: ReturnType<typeof setInterval> | undefined;

  private constructor(
    readonly rank: number,
    readonly size: number,
    readonly settings: DistSettings,
    private readonly addon: DistAddon | null,
    heartbeatSeconds = 0,
  ) {
    // Alive between collectives too (a step on a worker thread, a sampling batch):
    // the hang watch counts a rank that sends nothing for the timeout as hung.
    if (addon && heartbeatSeconds > 0) {
      this.#timer = setInterval(() => addon.distHeartbeat(), heartbeatSeconds * 1000);
      this.#timer.unref();
    }
  }

  static single(env: NodeJS.ProcessEnv = process.env): Dist {
    return new Dist(0, 1, distSettings(env), null);
  }

  /** Joins the MPI job this process was launched in; a single process when not under mpirun. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): Dist {
    const settings = distSettings(env);
    const w = worldFromEnv(env);
    if (!w || w.size === 1) return new Dist(0, 1, settings, null);
    const a = native() as unknown as Partial<DistAddon>;
    if (typeof a.distInit !== 'function')
      throw new Error('rargen: this build of the native addon has no MPI support (src/binding_dist.cc); rebuild with `npm run build:native`');
    const r = a.distInit({ timeout: settings.timeout, bucketMB: settings.bucketMB });
    if (r.rank !== w.rank || r.size !== w.size)
      throw new Error(`rargen: MPI says rank ${r.rank} of ${r.size} but the launcher (${w.launcher}) set rank ${w.rank} of ${w.size}`);
    return new Dist(r.rank, r.size, settings, a as DistAddon, r.heartbeat);
  }

  /** This rank's device for a --device request (see rankDevice). */
  device(spec: DeviceSpec): DeviceSpec {
    return rankDevice(spec, { size: this.size, localRank: this.settings.localRank }, () => {
      const st = native().cudaStatus();
      return st.built && st.available ? st.devices.length : 0;
    });
  }

  get isRoot(): boolean {
    return this.rank === 0;
  }

  /** In place over all ranks. */
  allreduce(v: Float64Array, op: 'sum' | 'max' = 'sum'): Float64Array {
    if (this.addon) this.addon.distAllreduce(v, op);
    return v;
  }

  /** Every rank's string, in rank order. */
  allgather(s: string): string[] {
    if (!this.addon) return [s];
    const bytes = new TextEncoder().encode(s);
    const len = this.allreduce(Float64Array.of(bytes.length), 'max')[0]!;
    const buf = new Uint8Array(len + 4);
    new DataView(buf.buffer).setUint32(0, bytes.length, true);
    buf.set(bytes, 4);
    const all = this.addon.distAllgather(buf);
    const dec = new TextDecoder();
    const out: string[] = [];
    for (let r = 0; r < this.size; r++) {
      const o = r * (len + 4);
      const n = new DataView(all.buffer, all.byteOffset + o, 4).getUint32(0, true);
      out.push(dec.decode(all.subarray(o + 4, o + 4 + n)));
    }
    return out;
  }

  /** Rank 0: every rank's rows joined in rank order; the other ranks: null. */
  gather(v: Float32Array): Float32Array | null {
    if (!this.addon) return v;
    return this.addon.distGatherF32(v) ?? null;
  }

  /**
   * Waits for every rank. patient: ranks may come much later (each had its own share of
   * work); only a rank that stops sending heartbeats ends the job.
   */
  barrier(opts: { patient?: boolean } = {}): void {
    this.addon?.distBarrier(opts.patient === true);
  }

  /** True on every rank when it is true on any. */
  any(flag: boolean): boolean {
    return this.allreduce(Float64Array.of(flag ? 1 : 0), 'max')[0]! > 0;
  }

  /**
   * Stops every rank with the same message unless all ranks agree on every field
   * (config hash, rargen version, parameter count, data size...). Names the field
   * and the first rank that differs from rank 0.
   */
  checkSame(fields: Record<string, unknown>, what = 'the run'): void {
    if (!this.addon) return;
    const all = this.allgather(JSON.stringify(fields)).map((s) => JSON.parse(s) as Record<string, unknown>);
    const ref = all[0]!;
    for (let r = 1; r < all.length; r++) {
      const d = firstDifference(all[r], ref, '');
      if (d)
        throw new Error(
          `rargen: the ${this.size} MPI ranks disagree on ${what}: ${d.path} is ${JSON.stringify(d.a)} on rank ${r} but ` +
            `${JSON.stringify(d.b)} on rank 0; launch every rank with the same command, config and files`,
        );
    }
  }

  finalize(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.addon?.distFinalize();
  }
}

/** The first leaf (dotted path) where two JSON values differ, or null. */
export function firstDifference(a: unknown, b: unknown, path: string): { path: string; a: unknown; b: unknown } | null {
  const obj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object';
  if (obj(a) && obj(b)) {
    for (const k of new Set([...Object.keys(b), ...Object.keys(a)])) {
      const d = firstDifference(a[k], b[k], path ? `${path}.${k}` : k);
      if (d) return d;
    }
    return null;
  }
  return JSON.stringify(a) === JSON.stringify(b) ? null : { path: path || 'value', a, b };
}

/** A checksum of a set of float32 tensors (RARGEN_DIST_CHECKSUM=1: ranks' parameters must stay identical). */
export function tensorChecksum(tensors: Iterable<Float32Array>): string {
  const h = createHash('sha256');
  for (const t of tensors) h.update(new Uint8Array(t.buffer, t.byteOffset, t.byteLength));
  return h.digest('hex').slice(0, 16);
}
