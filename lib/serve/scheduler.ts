// Continuous batching over one decode session (lib/session.ts DecodeSession). Requests
// become one sequence per image, queued in arrival order. The step loop, at every step:
//  1. applies the cancels asked for while the last step ran (a cancelled request's
//     rows are free before anything is admitted),
//  2. admits queued sequences while the session has free rows (rows at different
//     positions share one batch, each with its own KV slot),
//  3. runs one session step and reports per-request progress,
//  4. hands the sequences that finished to the renderer at once (their rows are
//     already free for the next admission).
// The renderer turns finished token sequences into PNG files in batches (the tokenizer's
// VQ decode of up to `decodeBatch` images in one call, or the demo palette), while the
// step loop goes on (`overlapDecode`; bench/serve.ts measures both ways). Image k of a
// request is sequence index `indexOffset + k` of its seed, so it equals generate()'s
// image k whatever else shares the batch (the session's contract).
import type { SequenceSpec } from '../session.js';
import { ApiError, type ImageRequest } from './schema.js';

/** A sequence as lib/session.ts DecodeSession takes it. */
export type SessionSpec = SequenceSpec;
export interface SessionLike {
  readonly maxRows: number;
  readonly freeRows: number;
  readonly active: number;
  rowsFor(spec: SessionSpec): number;
  add(spec: SessionSpec): number;
  cancel(id: number): void;
  step(): Promise<{ progressed: { id: number; tokens: number }[]; finished: { id: number; tokens: Int32Array }[] }>;
  dispose(): void;
}

/** Token sequences to PNG files, one per sequence, in order. */
export type Renderer = (tokens: Int32Array[]) => Promise<Buffer[]>;

export interface SchedulerOptions {
  session: SessionLike;
  /** Tokens per image. */
  seqLen: number;
  render: Renderer;
  /** Most images waiting for a row (default 256); more gets 429. */
  maxQueue?: number;
  /** Images per render call (default 16). */
  decodeBatch?: number;
  /** Keep stepping while a render runs (default true). */
  overlapDecode?: boolean;
}

export interface JobProgress {
  tokensDone: number;
  tokensTotal: number;
  imagesDone: number;
  imagesTotal: number;
}

/** One finished image of a request. */
export interface JobImage {
  /** Position in the request (0..n-1). */
  k: number;
  classId: number;
  /** Sequence index of the seed: indexOffset + k. */
  index: number;
  tokens: Int32Array;
  /** The PNG file, unless the request asked for tokens. */
  png?: Buffer;
}

export interface JobEvents {
  /** After each step that sampled tokens of this request. */
  progress?(p: JobProgress): void;
  /** Each image as it completes (in completion order). */
  image?(img: JobImage): void;
}

export interface Ticket {
  /** Resolves with every image in request order; rejects with an ApiError when cancelled. */
  done: Promise<JobImage[]>;
  /** Frees the request's rows and queue places; `reason` is what `done` rejects with. */
  cancel(reason?: ApiError): void;
}

interface Job {
  req: ImageRequest;
  events: JobEvents;
  /** Next image to admit. */
  nextK: number;
  tokens: number[];
  results: (JobImage | undefined)[];
  remaining: number;
  /** Session ids of its running sequences. */
  ids: Set<number>;
  closed: boolean;
  resolve(v: JobImage[]): void;
  reject(e: ApiError): void;
}

interface Seq {
  job: Job;
  k: number;
}

export interface SchedulerStats {
  /** Images waiting for a row. */
  queuedImages: number;
  /** Requests with images waiting for a row. */
  queuedRequests: number;
  /** Images being sampled. */
  activeImages: number;
  rowsUsed: number;
  maxRows: number;
  /** Images sampled, waiting for or in the renderer. */
  rendering: number;
  steps: number;
  imagesDone: number;
  cancelledImages: number;
}

export class Scheduler {
  readonly session: SessionLike;
  readonly seqLen: number;
  readonly maxQueue: number;
  readonly decodeBatch: number;
  readonly overlapDecode: boolean;
  #render: Renderer;
  #queue: Job[] = [];
  #queuedImages = 0;
  #seqs = new Map<number, Seq>();
  #jobs = new Set<Job>();
  #pendingCancels: number[] = [];
  #stepping = false;
  #loop: Promise<void> | undefined;
  #renderQueue: { seq: Seq; tokens: Int32Array }[] = [];
  #rendering: Promise<void> | undefined;
  #closed = false;
  #fatal: Error | undefined;
  #steps = 0;
  #imagesDone = 0;
  #cancelled = 0;
  /** Called after every step with (rows used before it, the step's seconds). */
  onStep?: (rowsUsed: number, seconds: number) => void;
  /** Called for each completed image. */
  onImage?: () => void;

  constructor(o: SchedulerOptions) {
    this.session = o.session;
    this.seqLen = o.seqLen;
    this.#render = o.render;
    this.maxQueue = o.maxQueue ?? 256;
    this.decodeBatch = o.decodeBatch ?? 16;
    this.overlapDecode = o.overlapDecode ?? true;
  }

  stats(): SchedulerStats {
    return {
      queuedImages: this.#queuedImages,
      queuedRequests: this.#queue.length,
      activeImages: this.#seqs.size,
      rowsUsed: this.session.maxRows - this.session.freeRows,
      maxRows: this.session.maxRows,
      rendering: this.#renderQueue.length,
      steps: this.#steps,
      imagesDone: this.#imagesDone,
      cancelledImages: this.#cancelled,
    };
  }

  /** Requests not finished yet. */
  get pendingRequests(): number {
    return this.#jobs.size;
  }

  /** Seconds a client should wait before retrying a refused request (from the queue and the recent throughput). */
  retryAfterSeconds(imagesPerSecond: number): number {
    const backlog = this.#queuedImages + this.#seqs.size;
    return Math.max(1, Math.min(60, Math.ceil(backlog / Math.max(imagesPerSecond, 0.1))));
  }

  /** Queues a request. Throws ApiError 429 when the queue is full, 503 when closed. */
  submit(req: ImageRequest, events: JobEvents = {}, imagesPerSecond = 0): Ticket {
    if (this.#closed) throw new ApiError(503, 'shutting_down', 'the server is shutting down', undefined, { connection: 'close' });
    if (this.#fatal) throw new ApiError(503, 'unavailable', `the decode session failed: ${this.#fatal.message}`);
    const n = req.labels.length;
    if (this.#queuedImages + n > this.maxQueue)
      throw new ApiError(
        429,
        'queue_full',
        `the queue is full (${this.#queuedImages} images waiting, at most ${this.maxQueue}); retry later`,
        undefined,
        { 'retry-after': String(this.retryAfterSeconds(imagesPerSecond)) },
      );
    let resolve!: (v: JobImage[]) => void;
    let reject!: (e: ApiError) => void;
    const done = new Promise<JobImage[]>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => undefined); // a caller that only cancels still sees the rejection when it awaits
    const job: Job = { req, events, nextK: 0, tokens: new Array(n).fill(0), results: new Array(n), remaining: n, ids: new Set(), closed: false, resolve, reject };
    this.#queue.push(job);
    this.#queuedImages += n;
    this.#jobs.add(job);
    this.#kick();
    return { done, cancel: (reason) => this.#cancel(job, reason ?? new ApiError(499, 'cancelled', 'the request was cancelled')) };
  }

  #cancel(job: Job, reason: ApiError): void {
    if (job.closed) return;
    this.#closeJob(job);
    job.reject(reason);
  }

  /** Takes a job out of everything: queue places, running rows, render queue. */
  #closeJob(job: Job): void {
    job.closed = true;
    this.#jobs.delete(job);
    const qi = this.#queue.indexOf(job);
    if (qi >= 0) {
      this.#queue.splice(qi, 1);
      const left = job.req.labels.length - job.nextK;
      this.#queuedImages -= left;
      this.#cancelled += left;
    }
    for (const id of job.ids) {
      this.#cancelled++;
      if (this.#stepping) this.#pendingCancels.push(id);
      else this.#cancelSeq(id);
    }
    job.ids.clear();
  }

  #cancelSeq(id: number): void {
    if (!this.#seqs.delete(id)) return; // finished in the step that was running

    this.session.cancel(id);
  }

  #kick(): void {
    if (!this.#loop && !this.#fatal) this.#loop = this.#run().finally(() => (this.#loop = undefined));
  }

  #admit(): void {
    const s = this.session;
    while (this.#queue.length > 0) {
      const job = this.#queue[0]!;
      const k = job.nextK;
      const r = job.req;
      const spec: SessionSpec = {
        classId: r.labels[k]!,
        seed: r.seed,
        index: r.indexOffset + k,
        guidanceScale: r.guidanceScale,
        guidanceScalePow: r.guidanceScalePow,
        temperature: r.temperature,
        topK: r.topK,
        topP: r.topP,
        greedy: r.greedy,
      };
      let id: number;
      try {
        if (s.freeRows < s.rowsFor(spec)) return;
        id = s.add(spec);
      } catch (e) {
        // a spec the session refuses (the schema should have caught it): this request fails alone
        this.#cancel(job, new ApiError(400, 'invalid_field', (e as Error).message));
        continue;
      }
      this.#seqs.set(id, { job, k });
      job.ids.add(id);
      job.nextK++;
      this.#queuedImages--;
      if (job.nextK === r.labels.length) this.#queue.shift();
    }
  }

  async #run(): Promise<void> {
    try {
      for (;;) {
        for (const id of this.#pendingCancels.splice(0)) this.#cancelSeq(id);
        this.#admit();
        if (this.session.active === 0) break;
        const rowsUsed = this.session.maxRows - this.session.freeRows;
        const t0 = performance.now();
        this.#stepping = true;
        let r;
        try {
          r = await this.session.step();
        } finally {
          this.#stepping = false;
        }
        this.#steps++;
        this.onStep?.(rowsUsed, (performance.now() - t0) / 1000);
        const touched = new Set<Job>();
        for (const p of r.progressed) {
          const seq = this.#seqs.get(p.id);
          if (!seq || seq.job.closed) continue;
          seq.job.tokens[seq.k] = p.tokens;
          touched.add(seq.job);
        }
        for (const f of r.finished) {
          const seq = this.#seqs.get(f.id);
          this.#seqs.delete(f.id);
          if (!seq || seq.job.closed) continue;
          seq.job.ids.delete(f.id);
          seq.job.tokens[seq.k] = this.seqLen;
          touched.add(seq.job);
          if (seq.job.req.responseFormat === 'tokens') this.#deliver(seq, f.tokens, undefined);
          else this.#renderQueue.push({ seq, tokens: f.tokens });
        }
        for (const job of touched) if (!job.closed && job.events.progress) job.events.progress(this.#progress(job));
        this.#kickRender();
        if (!this.overlapDecode && this.#rendering) await this.#rendering;
      }
    } catch (e) {
      // The session is in an unknown state: fail everything running and queued, refuse new work.
      this.#fatal = e instanceof Error ? e : new Error(String(e));
      const err = new ApiError(500, 'internal', `the decode session failed: ${this.#fatal.message}`);
      for (const job of [...this.#jobs]) this.#cancel(job, err);
    }
  }

  #progress(job: Job): JobProgress {
    const n = job.req.labels.length;
    return { tokensDone: job.tokens.reduce((a, b) => a + b, 0), tokensTotal: n * this.seqLen, imagesDone: n - job.remaining, imagesTotal: n };
  }

  #deliver(seq: Seq, tokens: Int32Array, png: Buffer | undefined): void {
    const job = seq.job;
    if (job.closed) return;
    const img: JobImage = { k: seq.k, classId: job.req.labels[seq.k]!, index: job.req.indexOffset + seq.k, tokens, ...(png ? { png } : {}) };
    job.results[seq.k] = img;
    job.remaining--;
    this.#imagesDone++;
    this.onImage?.();
    job.events.image?.(img);
    if (job.remaining === 0 && !job.closed) {
      job.closed = true;
      this.#jobs.delete(job);
      job.resolve(job.results as JobImage[]);
    }
  }

  #kickRender(): void {
    if (this.#rendering || this.#renderQueue.length === 0) return;
    this.#rendering = (async () => {
      while (this.#renderQueue.length > 0) {
        const batch = this.#renderQueue.splice(0, this.decodeBatch).filter((x) => !x.seq.job.closed);
        if (batch.length === 0) continue;
        let pngs: Buffer[];
        try {
          pngs = await this.#render(batch.map((x) => x.tokens));
        } catch (e) {
          const err = new ApiError(500, 'internal', `decoding the images failed: ${(e as Error).message}`);
          for (const x of batch) this.#cancel(x.seq.job, err);
          continue;
        }
        batch.forEach((x, i) => this.#deliver(x.seq, x.tokens, pngs[i]));
      }
    })().finally(() => (this.#rendering = undefined));
  }

  /** Resolves when nothing is queued, running or rendering. */
  async idle(): Promise<void> {
    while (this.#loop || this.#rendering) await (this.#loop ?? this.#rendering);
  }

  /**
   * Stops taking requests; lets the accepted ones finish for up to `graceMs`, then
   * cancels what is left with a 503 and waits for the loop to stop. Idempotent.
   */
  async close(graceMs = 30_000): Promise<void> {
    this.#closed = true;
    const deadline = Date.now() + graceMs;
    while (this.#jobs.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
    const err = new ApiError(503, 'shutting_down', 'the server shut down before this request finished');
    for (const job of [...this.#jobs]) this.#cancel(job, err);
    await this.idle();
    for (const id of this.#pendingCancels.splice(0)) this.#cancelSeq(id);
  }

  get closed(): boolean {
    return this.#closed;
  }
}
