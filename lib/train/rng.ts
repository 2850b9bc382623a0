// Seeded random numbers for training, drawn in TypeScript so that every backend (CPU,
// CUDA, any number of ranks) trains on the same permutations, label drops and
// dropout seeds. xoshiro128** (Blackman & Vigna) seeded through splitmix32: small,
// fast in 32-bit integer JS arithmetic, and its whole state is four uint32 that go
// into a checkpoint as they are.
//
// Streams are derived, not shared: `deriveSeed(seed, stream, a, b)` hashes its
// arguments into a fresh seed, so "the randomness of optimizer step s" or "the
// shuffle of epoch e" depends only on (seed, s) or (seed, e) and never on how many
// numbers some other part of the program drew before.

/** splitmix32 step: returns [output, next state]. */
function splitmix32(state: number): [number, number] {
  state = (state + 0x9e3779b9) >>> 0;
  let z = state;
  z = Math.imul(z ^ (z >>> 16), 0x21f0aaad) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x735a2d97) >>> 0;
  return [(z ^ (z >>> 15)) >>> 0, state];
}

/** lowbias32 integer hash (also used by the fixtures' weight formula). */
export function lowbias32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** Splits a seed (integer, |seed| < 2^53) into two uint32 words. */
export function seedWords(seed: number): [number, number] {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed: expected a safe integer but received ${seed}`);
  const lo = seed >>> 0; // two's complement for negatives
  const hi = Math.floor(seed / 4294967296) >>> 0;
  return [lo, hi];
}

/** A 32-bit seed that depends on every argument (all integers). */
export function deriveSeed(seed: number, ...parts: number[]): number {
  const [lo, hi] = seedWords(seed);
  let h = lowbias32(lo ^ 0x5bd1e995);
  h = lowbias32(h ^ hi);
  for (const p of parts) {
    const [plo, phi] = seedWords(p);
    h = lowbias32((h ^ plo) >>> 0);
    h = lowbias32((h + phi + 0x9e3779b9) >>> 0);
  }
  return h;
}

export type RngState = [number, number, number, number];

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** Seeded from a 32- or 53-bit integer, or restored from a saved state. */
  constructor(seed: number | RngState) {
    if (Array.isArray(seed)) {
      [this.s0, this.s1, this.s2, this.s3] = seed.map((x) => x >>> 0) as RngState;
      if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) throw new RangeError('Rng: the all-zero state is invalid');
      return;
    }
    const [lo, hi] = seedWords(seed);
    let st = (lo ^ Math.imul(hi, 0x85ebca6b)) >>> 0;
    const out: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [v, next] = splitmix32(st);
      out.push(v);
      st = next;
    }
    [this.s0, this.s1, this.s2, this.s3] = out as RngState;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  state(): RngState {
    return [this.s0, this.s1, this.s2, this.s3];
  }

  /** Uniform uint32. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 random bits. */
  nextFloat(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n), n <= 2^32, unbiased (rejection). */
  nextInt(n: number): number {
    if (!(n >= 1 && n <= 4294967296 && Number.isInteger(n))) throw new RangeError(`nextInt: expected 1 <= n <= 2^32 but received ${n}`);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const u = this.nextU32();
      if (u < limit) return u % n;
    }
  }

  /** Writes a uniform random permutation of 0..n-1 into out[offset..offset+n) (Fisher-Yates). */
  permutation(out: Int32Array, offset: number, n: number): void {
    for (let i = 0; i < n; i++) out[offset + i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const t = out[offset + i]!;
      out[offset + i] = out[offset + j]!;
      out[offset + j] = t;
    }
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
