// Continuous batching on one generator: a DecodeSession holds a pool of KV-cache rows;
// sequences are added and cancelled between (or during) steps, and each step() runs
// the prefill of the new ones and one decode step of the others in one batch, each
// sampled with its own options (native: src/binding_session.cc, rargen::RarSession).
//
// Exactness: a sequence's tokens equal
//   generate({ generator, classLabels: [classId], seed, indexOffset: index, ...same options }).tokens[0]
// whatever else shares the batch and whenever it was added (test/native/session.test.ts).
import { z } from 'zod';
import { Generator } from './generate.js';
import { ValidationError } from './errors.js';
import { parseOptions } from './validate.js';
import { native, type NativeSession } from './native.js';
import { resolveSampling } from './config.js';

/** One image to sample. Unset options default to generator.sampling (as generate()). */
export interface SequenceSpec {
  /** Class id, 0..numClasses-1. */
  classId: number;
  /** As generate(); default 0. */
  seed?: number | bigint;
  /** Image index in the seed's stream (= generate's indexOffset + i); default 0. */
  index?: number;
  /** Classifier-free guidance scale (0 = none: the sequence takes 1 row instead of 2). */
  guidanceScale?: number;
  guidanceScalePow?: number;
  temperature?: number;
  /** 0 = off (default). */
  topK?: number;
  /** 1 = off (default). */
  topP?: number;
  greedy?: boolean;
}

export interface SessionStep {
  /** Every sequence that sampled a token in this step: its id and how many tokens it has now. */
  progressed: { id: number; tokens: number }[];
  /** Sequences that completed in this step (their rows are already free). */
  finished: { id: number; tokens: Int32Array }[];
}

export interface DecodeSessionOptions {
  /** KV-cache rows (a sequence with guidance takes 2). Default: as many as the memory budget allows. */
  maxRows?: number;
}

/** add() found too few free rows; step() until sequences finish, or cancel some. */
export class SessionFullError extends Error {
  override name = 'SessionFullError';
  readonly code = 'RARGEN_SESSION_FULL';
  constructor(
    message: string,
    /** Rows the sequence needs. */
    readonly rowsNeeded: number,
    /** Rows free when it was asked. */
    readonly rowsFree: number,
  ) {
    super(message);
  }
}

const SEED_MAX = 2n ** 64n - 1n;

function specSchema(numClasses: number, codebookSize: number) {
  const num = (e: string) => z.number({ error: e }).refine(Number.isFinite, { error: e });
  const int = (min: number, max: number) => {
    const e = `integer between ${min} and ${max}`;
    return z.number({ error: e }).int({ error: e }).min(min, { error: e }).max(max, { error: e });
  };
  return z.strictObject(
    {
      classId: int(0, numClasses - 1),
      seed: z
        .custom<number | bigint>(
          (v) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) || (typeof v === 'bigint' && v >= 0n && v <= SEED_MAX),
          { error: 'safe integer >= 0 or bigint between 0 and 2^64-1' },
        )
        .optional(),
      index: int(0, Number.MAX_SAFE_INTEGER).optional(),
      guidanceScale: num('finite number >= 0').refine((v) => v >= 0, { error: 'finite number >= 0' }).optional(),
      guidanceScalePow: num('finite number >= 0').refine((v) => v >= 0, { error: 'finite number >= 0' }).optional(),
      temperature: num('finite number > 0').refine((v) => v > 0, { error: 'finite number > 0' }).optional(),
      topK: int(0, codebookSize).optional(),
      topP: num('number greater than 0 and at most 1').refine((v) => v > 0 && v <= 1, { error: 'number greater than 0 and at most 1' }).optional(),
      greedy: z.boolean({ error: 'boolean' }).optional(),
    },
    { error: 'a sequence spec object' },
  );
}

/** KV rows of one sequence: a conditional and an unconditional row with guidance, one without. */
function rowsWith(guidanceScale: number): number {
  return guidanceScale !== 0 ? 2 : 1;
}

/**
 * A decode session on one generator. step() runs under generator.exclusive(), so it
 * interleaves with generate() calls on the same generator, one native job at a time.
 */
export class DecodeSession {
  readonly #gen: Generator;
  #h: NativeSession | undefined;
  readonly #schema: ReturnType<typeof specSchema>;
  /** KV rows; a sequence with guidanceScale != 0 takes 2 rows, else 1. */
  readonly maxRows: number;

  #detach: () => void;
  #disposedWhy = '';

  private constructor(gen: Generator, h: NativeSession) {
    this.#gen = gen;
    this.#h = h;
    this.#detach = gen.attach(this);
    this.#schema = specSchema(gen.config.numClasses, gen.config.codebookSize);
    this.maxRows = native().sessionInfo(h).maxRows;
  }

  static create(generator: Generator, options: DecodeSessionOptions = {}): DecodeSession {
    if (!(generator instanceof Generator)) throw new ValidationError('DecodeSession.create: generator must be a Generator from loadGenerator()');
    const o = parseOptions(
      z.strictObject({ maxRows: z.number({ error: 'integer between 1 and 4096' }).int({ error: 'integer between 1 and 4096' }).min(1, { error: 'integer between 1 and 4096' }).max(4096, { error: 'integer between 1 and 4096' }).optional() }, { error: 'an options object' }),
      options,
      'DecodeSession.create',
    );
    const h = native().sessionCreate(generator.handle('DecodeSession.create'), o.maxRows ?? 0);
    return new DecodeSession(generator, h);
  }

  #handle(what: string): NativeSession {
    if (!this.#h) throw new ValidationError(`DecodeSession.${what}: the session was disposed${this.#disposedWhy}`);
    return this.#h;
  }

  /** Rows free for new sequences now. */
  get freeRows(): number {
    return native().sessionInfo(this.#handle('freeRows')).freeRows;
  }

  /** Sequences in flight (added, neither finished nor cancelled). */
  get active(): number {
    return native().sessionInfo(this.#handle('active')).active;
  }

  /** Rows the sequence would take: 2 with guidance, 1 without. */
  rowsFor(spec: SequenceSpec): number {
    const s = parseOptions(this.#schema, spec, 'DecodeSession.rowsFor', 'spec');
    return rowsWith(resolveSampling(s, this.#gen.sampling).guidanceScale);
  }

  /** Validates the spec and admits the sequence (its prefill runs in the next step); returns its id. */
  add(spec: SequenceSpec): number {
    const h = this.#handle('add');
    const s = parseOptions(this.#schema, spec, 'DecodeSession.add', 'spec');
    const d = this.#gen.sampling;
    const sampling = resolveSampling(s, d);
    const need = rowsWith(sampling.guidanceScale);
    const free = native().sessionInfo(h).freeRows;
    if (free < need) throw new SessionFullError(`DecodeSession.add: the sequence needs ${need} rows but ${free} of ${this.maxRows} are free; step() until sequences finish, or cancel some`, need, free);
    return native().sessionAdd(h, {
      classId: s.classId,
      ...sampling,
      seed: String(s.seed ?? 0),
      index: s.index ?? 0,
    });
  }

  /** Frees the sequence's rows (now, or at the end of a running step). Unknown or finished ids are ignored. */
  cancel(id: number): void {
    if (!Number.isSafeInteger(id)) throw new ValidationError(`DecodeSession.cancel: id must be a sequence id from add() but received ${String(id)}`);
    native().sessionCancel(this.#handle('cancel'), id);
  }

  /** One iteration over the active sequences; resolves empty when none is active. */
  async step(): Promise<SessionStep> {
    this.#handle('step');
    // the handle is taken again when the step's turn comes: a session disposed while it waited is refused, not used
    const r = await this.#gen.exclusive(() => native().sessionStep(this.#handle('step')), 'DecodeSession.step');
    const progressed: SessionStep['progressed'] = [];
    for (let i = 0; i + 1 < r.progressed.length; i += 2) progressed.push({ id: r.progressed[i]!, tokens: r.progressed[i + 1]! });
    return { progressed, finished: r.finished };
  }

  /** Frees the KV rows (after a running step). Idempotent. Disposing the generator disposes its sessions. */
  dispose(reason?: string): void {
    if (!this.#h) return;
    native().sessionDispose(this.#h);
    this.#h = undefined;
    if (reason) this.#disposedWhy = ` (${reason})`;
    this.#detach();
  }
}
