// The one place where rargen's TypeScript API checks what callers pass (issue 13): the
// message format, the zod helper schemas every options object is built from, and the
// AbortError of cancelled calls. Messages are sharp-style: "Expected <what> for
// <option> but received <value>". Each schema check carries the expectation ("integer
// between 0 and 999") as its message; parseOptions adds the option path and the value.
// The named error classes (with their stable `code`s) live in ./errors.ts.
import { z } from 'zod';
import type { DeviceSpec } from './device.js';
import { ValidationError } from './errors.js';
import { native } from './native.js';

export { ValidationError };

/** How a received value is shown in a message. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? v.slice(0, 60) + '...' : v);
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === 'object') {
    const name = (v as object).constructor?.name;
    return name && name !== 'Object' ? `a ${name}` : 'an object';
  }
  return String(v);
}

function formatPath(path: readonly PropertyKey[], root: string): string {
  let s = '';
  for (const p of path) {
    if (typeof p === 'number') s += `[${p}]`;
    else s += s ? `.${String(p)}` : String(p);
  }
  return s || root;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const p of path) {
    if (v === null || v === undefined) return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/**
 * Parses `input` with `schema`; on failure throws a ValidationError for the first
 * issue, naming the option (`root` when the input itself is wrong), the expectation
 * and the received value.
 */
export function parseOptions<T extends z.ZodType>(schema: T, input: unknown, fn: string, root = 'options'): z.output<T> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const iss = r.error.issues[0]!;
  if (iss.code === 'unrecognized_keys') {
    const keys = (iss as { keys: string[] }).keys;
    throw new ValidationError(`Unknown option${keys.length > 1 ? 's' : ''} ${keys.join(', ')} for ${fn}()`);
  }
  throw new ValidationError(`Expected ${iss.message} for ${formatPath(iss.path, root)} but received ${describeValue(valueAt(input, iss.path))}`);
}

// ---------------------------------------------------------------------------------
// Schemas: each reports one expectation whatever check fails.

/** A number (any check on it reports `expect`). */
export function num(expect: string) {
  return z.number({ error: expect });
}
/** An integer in [min, max]. */
export function intBetween(min: number, max: number) {
  const e = `integer between ${min} and ${max}`;
  return z.number({ error: e }).int({ error: e }).min(min, { error: e }).max(max, { error: e });
}
/** An integer >= min. */
export function intAtLeast(min: number) {
  const e = `integer >= ${min}`;
  return z.number({ error: e }).int({ error: e }).min(min, { error: e });
}
export const finiteAtLeast0 = num('finite number >= 0').min(0, { error: 'finite number >= 0' });
export const positiveNumber = num('finite number > 0').gt(0, { error: 'finite number > 0' });
/** (0, 1]: topP. */
export const unitInterval = num('number greater than 0 and at most 1').gt(0, { error: 'number greater than 0 and at most 1' }).max(1, { error: 'number greater than 0 and at most 1' });
export const boolSchema = z.boolean({ error: 'boolean' });
export const SEED_MAX = 2n ** 64n - 1n;
/** A sampling seed: a safe integer >= 0 or a bigint in [0, 2^64). */
export const seedSchema = z.custom<number | bigint>(
  (v) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) || (typeof v === 'bigint' && v >= 0n && v <= SEED_MAX),
  { error: 'safe integer >= 0 or bigint between 0 and 2^64-1' },
);
export const signalSchema = z.custom<AbortSignal>((v) => v instanceof AbortSignal, { error: 'an AbortSignal' });
/** A callback of type F. */
export const fnSchema = <F>() => z.custom<F>((v) => typeof v === 'function', { error: 'a function' });
/** A non-empty path string (`what`: 'a file path string', 'a folder path string'). */
export const pathSchema = (what = 'a file path string') => z.string({ error: what }).min(1, { error: what });
export const PrecisionSchema = z.enum(['f32', 'f16', 'bf16'], { error: 'one of f32, f16, bf16' });
export type Precision = z.infer<typeof PrecisionSchema>;
/** Where a model runs: auto, cpu, cuda, cuda:N. */
export const deviceSchema = z
  .string({ error: 'one of auto, cpu, cuda, cuda:N' })
  .regex(/^(auto|cpu|cuda|cuda:\d+)$/, { error: 'one of auto, cpu, cuda, cuda:N' }) as unknown as z.ZodType<DeviceSpec>;

/** Arrays and typed arrays become plain arrays before element checks. */
export function arrayLike<T extends z.ZodType>(el: T, expect: string) {
  return z.preprocess((v) => (ArrayBuffer.isView(v) && !(v instanceof DataView) ? Array.from(v as unknown as ArrayLike<number>) : v), z.array(el, { error: expect }).min(1, { error: expect }));
}

// ---------------------------------------------------------------------------------
// Cancellation

/** The DOMException 'AbortError' of an aborted call (the signal's reason as its cause). */
export function abortError(signal: AbortSignal): DOMException {
  const e = new DOMException('The operation was aborted', 'AbortError');
  if (signal.reason !== undefined) Object.defineProperty(e, 'cause', { value: signal.reason, configurable: true, writable: true });
  return e;
}

let nextJobId = 1;

/**
 * Runs one native job under a signal: aborting calls native().cancel(jobId). Jobs that
 * cannot be interrupted (the tokenizer's vqDecode/vqEncode) run to the end of their
 * batch, and then the result is dropped: an aborted call always rejects with AbortError,
 * at the latest one batch after the abort.
 */
export async function cancellable<T>(signal: AbortSignal | undefined, job: (jobId: number) => Promise<T>): Promise<T> {
  if (signal?.aborted) throw abortError(signal);
  const jobId = nextJobId++;
  const onAbort = () => native().cancel(jobId);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const result = await job(jobId);
    if (signal?.aborted) throw abortError(signal);
    return result;
  } catch (e) {
    if (signal?.aborted) throw abortError(signal);
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
