// A stand-in for lib/session.ts DecodeSession in the tests of the HTTP layer and the
// scheduler's bookkeeping (admission, cancellation, queue limits) that need no model:
// each sequence samples one token per step, token j = a hash of (class, seed, index,
// j), so an answer can be checked without the model. The byte-equality tests against
// generate() use the real session (server.test.ts, load.test.ts).
import type { SessionLike, SessionSpec } from '../../lib/serve/scheduler.js';

export function fakeToken(spec: SessionSpec, j: number, V: number): number {
  let h = (Math.imul(spec.classId + 1, 0x9e3779b1) ^ Math.imul(Number(BigInt(spec.seed ?? 0) % 1000003n) + 7, 0x85ebca6b) ^ Math.imul((spec.index ?? 0) + 13, 0xc2b2ae35) ^ Math.imul(j + 1, 0x27d4eb2f)) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  return ((h ^ (h >>> 13)) >>> 0) % V;
}

export class FakeSession implements SessionLike {
  #next = 1;
  #seqs = new Map<number, { spec: SessionSpec; rows: number; tokens: number[] }>();
  #used = 0;
  disposed = false;
  stepping = false;
  steps = 0;
  /** The largest number of rows in use at a step. */
  peakRows = 0;
  constructor(
    readonly maxRows: number,
    readonly seqLen: number,
    readonly codebookSize: number,
    /** Milliseconds each step takes. */
    readonly stepMs = 1,
  ) {}
  get freeRows(): number {
    return this.maxRows - this.#used;
  }
  get active(): number {
    return this.#seqs.size;
  }
  rowsFor(spec: SessionSpec): number {
    return (spec.guidanceScale ?? 0) !== 0 ? 2 : 1;
  }
  add(spec: SessionSpec): number {
    const rows = this.rowsFor(spec);
    if (rows > this.freeRows) throw Object.assign(new Error('session full'), { code: 'RARGEN_SESSION_FULL' });
    const id = this.#next++;
    this.#seqs.set(id, { spec, rows, tokens: [] });
    this.#used += rows;
    return id;
  }
  cancel(id: number): void {
    if (this.stepping) throw new Error('cancel during step');
    const s = this.#seqs.get(id);
    if (!s) throw new Error(`no sequence ${id}`);
    this.#seqs.delete(id);
    this.#used -= s.rows;
  }
  async step() {
    if (this.stepping) throw new Error('step during step');
    this.stepping = true;
    this.steps++;
    this.peakRows = Math.max(this.peakRows, this.#used);
    await new Promise((r) => setTimeout(r, this.stepMs));
    this.stepping = false;
    const progressed: { id: number; tokens: number }[] = [];
    const finished: { id: number; tokens: Int32Array }[] = [];
    for (const [id, s] of this.#seqs) {
      s.tokens.push(fakeToken(s.spec, s.tokens.length, this.codebookSize));
      progressed.push({ id, tokens: s.tokens.length });
      if (s.tokens.length === this.seqLen) {
        finished.push({ id, tokens: Int32Array.from(s.tokens) });
        this.#seqs.delete(id);
        this.#used -= s.rows;
      }
    }
    return { progressed, finished };
  }
  dispose(): void {
    this.disposed = true;
  }
}
