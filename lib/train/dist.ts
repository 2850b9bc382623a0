// Data-parallel training over MPI (docs/distributed-training.md).
//
// `mpirun -np N rargen train ...` starts N processes; each finds its rank and the
// world size in the environment mpirun sets (OMPI_COMM_WORLD_RANK/SIZE, PMIX_RANK),
// so a plain `rargen train` never loads MPI. Under mpirun the addon opens Open MPI's
// libmpi.so.40 at run time (src/binding_dist.cc; the addon links no MPI). The
// collectives a training step needs are here: the gradient mean (one flat buffer,
// in buckets, native), sums/maxima of a few doubles (loss, counts, the stop flag),
// and an all-gather of short strings (config check, data positions for checkpoints).
import { createHash } from 'node:crypto';
import { native } from '../native.js';

interface DistAddon {
  distInit(): { rank: number; size: number; library: string };
  distAllreduce(data: Float64Array, op?: 'sum' | 'max'): void;
  distAllgather(data: Uint8Array): Uint8Array;
  distFinalize(): void;
}

/** Rank and world size from mpirun's environment, or null when not launched by an MPI launcher. */
export function worldFromEnv(env: NodeJS.ProcessEnv = process.env): { rank: number; size: number; launcher: string } | null {
  const num = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : null);
  const size = num(env.OMPI_COMM_WORLD_SIZE) ?? num(env.PMIX_SIZE) ?? num(env.PMI_SIZE);
  const rank = num(env.OMPI_COMM_WORLD_RANK) ?? num(env.PMIX_RANK) ?? num(env.PMI_RANK);
  if (size === null || rank === null) return null;
  return { rank, size, launcher: env.OMPI_COMM_WORLD_SIZE !== undefined ? 'Open MPI' : env.PMI_SIZE !== undefined ? 'PMI (MPICH?)' : 'PMIx' };
}

/** The process group of a run: a single process (size 1, no MPI) or N MPI ranks. */
export class Dist {
  private constructor(
    readonly rank: number,
    readonly size: number,
    private readonly addon: DistAddon | null,
  ) {}

  static single(): Dist {
    return new Dist(0, 1, null);
  }

  /** Joins the MPI job this process was launched in; a single process when not under mpirun. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): Dist {
    const w = worldFromEnv(env);
    if (!w || w.size === 1) return Dist.single();
    const a = native() as unknown as Partial<DistAddon>;
    if (typeof a.distInit !== 'function')
      throw new Error('rargen: this build of the native addon has no MPI support (src/binding_dist.cc); rebuild with `npm run build:native`');
    const r = a.distInit();
    if (r.rank !== w.rank || r.size !== w.size)
      throw new Error(`rargen: MPI says rank ${r.rank} of ${r.size} but the launcher (${w.launcher}) set rank ${w.rank} of ${w.size}`);
    return new Dist(r.rank, r.size, a as DistAddon);
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
