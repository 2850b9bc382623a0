// Training data: the pretokenized JSON-lines file of 1d-tokenizer
// (`{"class_id": int, "tokens": [N ints], ...}` per line), streamed, shuffled
// through a seeded buffer, cut into batches; and the per-step randomness of RAR
// training (orders, class-label dropout, the dropout seed), drawn here in TS.
//
// Why it is built this way:
// - Streaming (readline over a file stream) keeps memory independent of the file
//   size; the only resident samples are the shuffle buffer's, stored as one
//   Uint16Array slab (N tokens x 2 bytes each) plus an Int32Array of classes, never
//   as JS arrays (a 256-token line as a JS array costs ~2 KB; here it costs 512 B).
// - Shuffling is a buffer of S samples: fill it, then repeatedly emit a uniformly
//   chosen slot and refill that slot from the file (S >= lines = a full shuffle;
//   S <= 1 = file order). The buffer's RNG is seeded per epoch from (seed, epoch).
// - Exact resumability without saving the buffer: the state is (epoch, samples
//   emitted in that epoch). Restoring replays the epoch from its start with the same
//   seed and discards that many samples, which reproduces the buffer exactly.
// - Batches run on across epoch ends (no sample is dropped; a batch may hold the
//   last samples of epoch e and the first of e+1).
// - Ranks of a data-parallel run read disjoint lines (line i goes to rank i % world)
//   and each has its own buffer and seeds.
import { createReadStream, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Rng, deriveSeed, type RngState } from './rng.js';

export const STREAM_SHUFFLE = 1;
export const STREAM_STEP = 2;

export class DataError extends Error {
  override name = 'DataError';
  readonly code = 'RARGEN_DATA';
}

export interface TokenDatasetOptions {
  seqLen: number; // N tokens per line
  codebookSize: number; // V: tokens must be < V
  numClasses: number; // K: class_id must be < K
  /** Shuffle buffer size in samples; <= 1 (or shuffle false) reads in file order. */
  bufferSize: number;
  shuffle: boolean;
  seed: number;
  rank?: number;
  worldSize?: number;
}

/** Where a dataset stream stands; goes into checkpoints. */
export interface DataState {
  file: string;
  fileBytes: number;
  epoch: number;
  /** Samples this rank has emitted in `epoch`. */
  emitted: number;
  seed: number;
  bufferSize: number;
  shuffle: boolean;
  rank: number;
  worldSize: number;
}

/** A batch: class ids 0..K-1 and image tokens, both int32 as the native side takes them. */
export interface Batch {
  ids: Int32Array; // (B, N)
  classIds: Int32Array; // (B)
  /** Epoch of each sample (a batch may cross an epoch end). */
  epochs: Int32Array; // (B)
}

type LineIter = AsyncIterator<string>;

export class TokenDataset {
  readonly path: string;
  readonly opts: Required<TokenDatasetOptions>;
  private readonly S: number;
  private readonly tokens: Uint16Array; // (S, N)
  private readonly classes: Int32Array; // (S)
  private count = 0;
  private lines: LineIter | null = null;
  private closeLines: (() => void) | null = null;
  private eof = false;
  private lineNo = 0; // non-blank lines read in this epoch (all ranks' lines)
  private physLine = 0; // physical line number, for messages
  private rng: Rng;
  private epoch_ = 0;
  private emitted_ = 0;
  private fileBytes: number;
  /** Lines this rank saw in the last complete epoch (null until one completes). */
  epochLength: number | null = null;

  constructor(path: string, opts: TokenDatasetOptions) {
    this.path = path;
    this.opts = { rank: 0, worldSize: 1, ...opts };
    const { seqLen, codebookSize, numClasses, bufferSize, rank, worldSize } = this.opts;
    for (const [k, v] of Object.entries({ seqLen, numClasses }))
      if (!Number.isInteger(v) || v < 1) throw new DataError(`TokenDataset: expected a positive integer ${k} but received ${v}`);
    if (!Number.isInteger(codebookSize) || codebookSize < 1 || codebookSize > 65536)
      throw new DataError(`TokenDataset: expected codebookSize in 1..65536 (16-bit token store) but received ${codebookSize}`);
    if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(rank) || rank < 0 || rank >= worldSize)
      throw new DataError(`TokenDataset: expected 0 <= rank < worldSize but received rank ${rank}, worldSize ${worldSize}`);
    this.S = this.opts.shuffle ? Math.max(1, Math.floor(bufferSize)) : 1;
    this.tokens = new Uint16Array(this.S * seqLen);
    this.classes = new Int32Array(this.S);
    try {
      this.fileBytes = statSync(path).size;
    } catch (err) {
      throw new DataError(`TokenDataset: cannot read the pretokenized data file ${path}: ${(err as Error).message}`);
    }
    this.rng = this.epochRng(0);
  }

  get epoch(): number {
    return this.epoch_;
  }

  /** Samples emitted in the current epoch. */
  get emitted(): number {
    return this.emitted_;
  }

  /** Bytes held for samples (the shuffle buffer's slabs). */
  get residentBytes(): number {
    return this.tokens.byteLength + this.classes.byteLength;
  }

  state(): DataState {
    return {
      file: this.path,
      fileBytes: this.fileBytes,
      epoch: this.epoch_,
      emitted: this.emitted_,
      seed: this.opts.seed,
      bufferSize: this.S,
      shuffle: this.opts.shuffle,
      rank: this.opts.rank,
      worldSize: this.opts.worldSize,
    };
  }

  /**
   * Moves to a saved position: replays that epoch from its start and discards
   * `emitted` samples. Throws when the file or the shuffling differ from the save.
   */
  async restore(s: DataState): Promise<void> {
    const problems: string[] = [];
    if (s.fileBytes !== this.fileBytes) problems.push(`file size ${this.fileBytes} bytes, saved ${s.fileBytes}`);
    if (s.seed !== this.opts.seed) problems.push(`seed ${this.opts.seed}, saved ${s.seed}`);
    if (s.bufferSize !== this.S) problems.push(`shuffle buffer ${this.S}, saved ${s.bufferSize}`);
    if (s.shuffle !== this.opts.shuffle) problems.push(`shuffle ${this.opts.shuffle}, saved ${s.shuffle}`);
    if (s.rank !== this.opts.rank || s.worldSize !== this.opts.worldSize)
      problems.push(`rank ${this.opts.rank}/${this.opts.worldSize}, saved ${s.rank}/${s.worldSize}`);
    if (problems.length)
      throw new DataError(`cannot resume the data stream of ${this.path} exactly: ${problems.join('; ')}`);
    this.close();
    this.epoch_ = s.epoch;
    this.emitted_ = 0;
    this.rng = this.epochRng(s.epoch);
    const sink = { ids: new Int32Array(this.opts.seqLen), classIds: new Int32Array(1), epochs: new Int32Array(1) };
    for (let i = 0; i < s.emitted; i++) {
      const e = this.epoch_;
      await this.nextInto(sink, 0);
      if (this.epoch_ !== e)
        throw new DataError(`cannot resume ${this.path}: the saved position (${s.emitted} samples into epoch ${s.epoch}) is past the end of the epoch`);
    }
  }

  /** The next B samples (B >= 1). */
  async nextBatch(B: number): Promise<Batch> {
    const N = this.opts.seqLen;
    const batch: Batch = { ids: new Int32Array(B * N), classIds: new Int32Array(B), epochs: new Int32Array(B) };
    for (let b = 0; b < B; b++) await this.nextInto(batch, b);
    return batch;
  }

  /** Stops reading (the stream reopens on the next call). */
  close(): void {
    this.closeLines?.();
    this.lines = null;
    this.closeLines = null;
    this.eof = false;
    this.count = 0;
    this.lineNo = 0;
  }

  private epochRng(epoch: number): Rng {
    return new Rng(deriveSeed(this.opts.seed, STREAM_SHUFFLE, epoch, this.opts.rank));
  }

  private open(): void {
    const input = createReadStream(this.path, { highWaterMark: 1 << 20 });
    const rl = createInterface({ input, crlfDelay: Infinity });
    this.lines = rl[Symbol.asyncIterator]();
    this.closeLines = () => {
      rl.close();
      input.destroy();
    };
    this.eof = false;
    this.lineNo = 0;
    this.physLine = 0;
  }

  /** Reads the next line of this rank into slot `slot`; false at end of file. */
  private async readInto(slot: number): Promise<boolean> {
    const { rank, worldSize } = this.opts;
    for (;;) {
      const r = await this.lines!.next();
      if (r.done) {
        this.eof = true;
        return false;
      }
      const line = r.value;
      this.physLine++;
      if (line.trim() === '') continue;
      const idx = this.lineNo++;
      if (idx % worldSize !== rank) continue;
      this.parseLine(line, this.physLine, slot);
      return true;
    }
  }

  private parseLine(line: string, lineNumber: number, slot: number): void {
    const { seqLen: N, codebookSize: V, numClasses: K } = this.opts;
    const where = `${this.path}:${lineNumber}`;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw new DataError(`${where}: invalid JSON: ${(err as Error).message}`);
    }
    const rec = obj as { class_id?: unknown; tokens?: unknown };
    const cls = rec?.class_id;
    if (typeof cls !== 'number' || !Number.isInteger(cls) || cls < 0 || cls >= K)
      throw new DataError(`${where}: expected an integer class_id between 0 and ${K - 1} but received ${JSON.stringify(cls)}`);
    let toks = rec.tokens;
    // Some tokenizers write (1, N) nested lists.
    if (Array.isArray(toks) && toks.length === 1 && Array.isArray(toks[0])) toks = toks[0];
    if (!Array.isArray(toks) || toks.length !== N)
      throw new DataError(
        `${where}: expected "tokens" to be a list of ${N} integers but received ${Array.isArray(toks) ? `a list of ${toks.length}` : JSON.stringify(toks)}`,
      );
    const off = slot * N;
    for (let i = 0; i < N; i++) {
      const t = toks[i];
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= V)
        throw new DataError(`${where}: expected tokens[${i}] to be an integer between 0 and ${V - 1} but received ${JSON.stringify(t)}`);
      this.tokens[off + i] = t;
    }
    this.classes[slot] = cls;
  }

  private async nextInto(out: Batch, b: number): Promise<void> {
    const N = this.opts.seqLen;
    for (let attempt = 0; ; attempt++) {
      if (!this.lines) this.open();
      while (!this.eof && this.count < this.S) {
        if (await this.readInto(this.count)) this.count++;
      }
      if (this.count > 0) break;
      // Epoch over: the file is exhausted and the buffer drained.
      if (this.emitted_ === 0 || attempt > 0)
        throw new DataError(`${this.path}: no samples for rank ${this.opts.rank} of ${this.opts.worldSize} (the file has no usable lines)`);
      this.epochLength = this.emitted_;
      this.close();
      this.epoch_++;
      this.emitted_ = 0;
      this.rng = this.epochRng(this.epoch_);
    }
    const i = this.S > 1 ? this.rng.nextInt(this.count) : 0;
    out.ids.set(this.tokens.subarray(i * N, (i + 1) * N), b * N);
    out.classIds[b] = this.classes[i]!;
    out.epochs[b] = this.epoch_;
    this.emitted_++;
    // Refill slot i from the file, or close the gap with the last slot.
    if (!this.eof && (await this.readInto(i))) return;
    const last = this.count - 1;
    if (i !== last) {
      this.tokens.copyWithin(i * N, last * N, (last + 1) * N);
      this.classes[i] = this.classes[last]!;
    }
    this.count--;
  }
}

// ---------------------------------------------------------------------------------
// Per-step randomness

export interface StepRandomnessOptions {
  seed: number;
  seqLen: number; // N
  codebookSize: number; // V
  numClasses: number; // K
  /** Probability of a random permutation (r(step)). */
  randomRatio: number;
  /** Probability that a label is replaced by the null class. */
  classLabelDropout: number;
  rank?: number;
}

/** What one optimizer step feeds the native trainer besides the tokens. */
export interface StepRandomness {
  /** Embedding indices: V+1+k for class k, V+K+1 (the null class) when dropped. */
  condition: Int32Array; // (B)
  orders: Int32Array; // (B, N): each row a permutation of 0..N-1
  /** 1 where the sample was trained in a random order. */
  randomOrder: Uint8Array; // (B)
  /** Seed of the native counter-based dropout RNG for this step (uint32 pair). */
  dropoutSeed: [number, number];
}

/**
 * The randomness of optimizer step `step` for a batch of class ids: a function of
 * (seed, step, rank) only, so a resumed run draws exactly what an uninterrupted run
 * draws. Per sample b in order: u < r -> random permutation, else raster; then
 * u' < p -> null class. Then the dropout seed.
 */
export function stepRandomness(o: StepRandomnessOptions, step: number, classIds: Int32Array): StepRandomness {
  const { seqLen: N, codebookSize: V, numClasses: K } = o;
  const B = classIds.length;
  const rng = new Rng(deriveSeed(o.seed, STREAM_STEP, step, o.rank ?? 0));
  const condition = new Int32Array(B);
  const orders = new Int32Array(B * N);
  const randomOrder = new Uint8Array(B);
  const nullClass = V + K + 1;
  for (let b = 0; b < B; b++) {
    const c = classIds[b]!;
    if (!(c >= 0 && c < K)) throw new RangeError(`stepRandomness: expected class ids between 0 and ${K - 1} but received ${c} at [${b}]`);
    if (rng.nextFloat() < o.randomRatio) {
      rng.permutation(orders, b * N, N);
      randomOrder[b] = 1;
    } else {
      for (let k = 0; k < N; k++) orders[b * N + k] = k;
    }
    condition[b] = rng.nextFloat() < o.classLabelDropout ? nullClass : V + 1 + c;
  }
  return { condition, orders, randomOrder, dropoutSeed: [rng.nextU32(), rng.nextU32()] };
}

/** The rng state type, re-exported for checkpoint code. */
export type { RngState };

const STREAM_DROPOUT = 3;

export interface ShardOptions {
  rank: number;
  size: number;
  /** Micro-batches per optimizer step (gradient_accumulation_steps). */
  accum: number;
  /** Which micro-batch (0..accum-1). */
  micro: number;
}

/**
 * The randomness of one rank's micro-batch: the step's randomness is drawn for the
 * whole global batch (accum x B x size samples, in the order those samples have in
 * the data file: micro-batch, row, rank, as line i goes to rank i % size) and each
 * rank takes its rows. So N ranks x batch B, 1 rank x B with N accumulation steps and
 * 1 rank x batch N*B draw the same orders and label drops for the same samples. The
 * dropout seed differs per (micro-batch, rank) (the native masks hash the row
 * position, so equal seeds would repeat masks); micro-batch 0 of rank 0 keeps the
 * step's seed, so a single process without accumulation draws what stepRandomness draws.
 */
export function shardRandomness(o: StepRandomnessOptions, step: number, classIds: Int32Array, s: ShardOptions): StepRandomness {
  const { seqLen: N, codebookSize: V, numClasses: K } = o;
  const B = classIds.length;
  const G = s.accum * B * s.size;
  const all = stepRandomness(o, step, new Int32Array(G));
  const nullClass = V + K + 1;
  const condition = new Int32Array(B);
  const orders = new Int32Array(B * N);
  const randomOrder = new Uint8Array(B);
  for (let k = 0; k < B; k++) {
    const c = classIds[k]!;
    if (!(c >= 0 && c < K)) throw new RangeError(`shardRandomness: expected class ids between 0 and ${K - 1} but received ${c} at [${k}]`);
    const j = (s.micro * B + k) * s.size + s.rank;
    orders.set(all.orders.subarray(j * N, (j + 1) * N), k * N);
    randomOrder[k] = all.randomOrder[j]!;
    condition[k] = all.condition[j] === nullClass ? nullClass : V + 1 + c;
  }
  const w = s.micro * s.size + s.rank;
  let dropoutSeed = all.dropoutSeed;
  if (w !== 0) {
    const r = new Rng(deriveSeed(o.seed, STREAM_DROPOUT, step, w));
    dropoutSeed = [r.nextU32(), r.nextU32()];
  }
  return { condition, orders, randomOrder, dropoutSeed };
}
