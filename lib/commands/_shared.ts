// Helpers shared by the CLI commands (this file's name starts with '_' so that the
// dispatcher does not list it as a command). A command module exports
// `summary: string` (one line for `rargen --help`) and `run(argv): Promise<number>`;
// it throws UsageError for bad arguments (exit 2) and any other Error for failures
// (exit 1); the dispatcher prints the message in one line.
import { parseArgs } from 'node:util';
import type { DeviceSpec } from '../device.js';
import { resolveClassName } from '../classes.js';
import { loadGenerator, loadTokenizer, type Generator, type LoadGeneratorOptions, type LoadTokenizerOptions, type Tokenizer } from '../generate.js';
import { ProgressBar } from '../progress.js';
import { PRESET_NAMES, type PresetName } from '../config.js';
import type { Precision } from '../validate.js';

/** A bad command line: the dispatcher prints it with a pointer to --help and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  readonly code = 'RARGEN_USAGE';
}

type Options = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

/** A string option's entry in an option table. */
export const STRING = { type: 'string' } as const;
/** A boolean option's entry. */
export const BOOLEAN = { type: 'boolean' } as const;
/** The options of every command that runs a model: --device and --batch-size. */
export const RUN_OPTIONS = { device: STRING, 'batch-size': STRING } as const;
/** The options of the commands that load a generator and a tokenizer (generate, sample-imagenet, serve). */
export const MODEL_OPTIONS = { generator: STRING, tokenizer: STRING, preset: STRING, precision: STRING, device: STRING } as const;
/** The sampling options of generate and sample-imagenet. */
export const SAMPLING_OPTIONS = { 'guidance-scale': STRING, 'guidance-pow': STRING, temperature: STRING, 'top-k': STRING, 'top-p': STRING, seed: STRING } as const;

/** The parsed values of options O (plus help), as node:util parseArgs types them. */
export type ParsedValues<O extends Options> = {
  [K in keyof O]?: O[K] extends { type: 'boolean' }
    ? O[K] extends { multiple: true }
      ? boolean[]
      : boolean
    : O[K] extends { multiple: true }
      ? string[]
      : string;
} & { help?: boolean };

/**
 * node:util parseArgs in strict mode, with its errors turned into UsageErrors
 * ("unknown option --foo", on one line). `--help`/`-h` is always accepted.
 */
export function parseCommandArgs<O extends Options>(argv: string[], options: O, allowPositionals = true): { values: ParsedValues<O>; positionals: string[] } {
  // `--classes -1`: parseArgs refuses a value starting with '-' as ambiguous; a negative
  // number after a string option is that option's value, so that its own check reports it.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    const m = /^--([^=]+)$/.exec(a);
    if (m && options[m[1]!]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      args.push(`${a}=${next}`);
      i++;
    } else args.push(a);
  }
  try {
    const r = parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals,
    });
    return { values: r.values as ParsedValues<O>, positionals: r.positionals };
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code?.startsWith('ERR_PARSE_ARGS')) throw new UsageError(err.message.replace(/\. To specify a positional argument.*$/s, '').replace(/\s*\n\s*/g, ' '));
    throw e;
  }
}

/** Prints `usage` when --help/-h was given; true then (the command returns 0). */
export function helpShown(values: { help?: boolean }, usage: string): boolean {
  if (!values.help) return false;
  process.stdout.write(usage + '\n');
  return true;
}

/** A required string option. */
export function requireOption(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`${flag} is required`);
  return value;
}

/** A decimal number option, or undefined when absent. */
export function numberOption(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const s = value.trim();
  const n = Number(s);
  if (s === '' || !Number.isFinite(n)) throw new UsageError(`${flag} expects a number but received ${JSON.stringify(value)}`);
  return n;
}

/** An integer option, or undefined when absent. */
export function intOption(value: string | undefined, flag: string, min = -Infinity): number | undefined {
  const n = numberOption(value, flag);
  if (n === undefined) return undefined;
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag} expects an integer${min > -Infinity ? ` >= ${min}` : ''} but received ${JSON.stringify(value)}`);
  return n;
}

/** --batch-size (an integer >= 1, or `batchSize` when absent) and --device of RUN_OPTIONS. */
export function runOptions(values: { device?: string; 'batch-size'?: string }, batchSize: number): { batchSize: number; device: DeviceSpec | undefined } {
  return { batchSize: intOption(values['batch-size'], '--batch-size', 1) ?? batchSize, device: deviceOption(values.device) };
}

/** --device: auto, cpu, cuda or cuda:N (undefined when absent). */
export function deviceOption(value: string | undefined, flag = '--device'): DeviceSpec | undefined {
  if (value === undefined) return undefined;
  if (!/^(auto|cpu|cuda|cuda:\d+)$/.test(value)) throw new UsageError(`${flag} expects one of auto, cpu, cuda, cuda:N but received ${JSON.stringify(value)}`);
  return value as DeviceSpec;
}

/** A non-negative 64-bit seed. */
export function seedOption(value: string | undefined, flag = '--seed'): bigint | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`${flag} expects a non-negative integer but received ${JSON.stringify(value)}`);
  const v = BigInt(value.trim());
  if (v >= 2n ** 64n) throw new UsageError(`${flag} must be below 2^64 but received ${value}`);
  return v;
}

/** What a class list is checked against: the class count and, when known, the names. */
export interface ClassSpace {
  count: number;
  names?: readonly string[];
}

/**
 * Class ids: "207,360", ranges "0-9", names "golden retriever,tabby" (with `space.names`),
 * or a mix. With `space`, every id and range bound is checked against the class count
 * before a range is expanded.
 */
export function parseClassList(value: string, flag = '--classes', space?: ClassSpace): number[] {
  const out: number[] = [];
  const max = space ? space.count - 1 : Infinity;
  const check = (n: number, text: string) => {
    if (n > max) throw new UsageError(`${flag}: class ${text} is out of range: the model has ${space!.count} classes (0..${max})`);
    return n;
  };
  for (const part of value.split(',')) {
    const p = part.trim();
    const range = /^(\d+)\s*-\s*(\d+)$/.exec(p);
    if (range) {
      const a = check(Number(range[1]), range[1]!);
      const b = check(Number(range[2]), range[2]!);
      if (b < a) throw new UsageError(`${flag}: range ${p} is empty`);
      if (b - a >= 10_000_000) throw new UsageError(`${flag}: range ${p} is too large`);
      for (let k = a; k <= b; k++) out.push(k);
    } else if (/^\d+$/.test(p)) out.push(check(Number(p), p));
    else if (space?.names && /[a-z]/i.test(p)) {
      try {
        out.push(resolveClassName(p, space.names));
      } catch (e) {
        throw new UsageError(`${flag}: ${(e as Error).message}`);
      }
    } else
      throw new UsageError(
        `${flag} expects class ids${space ? ` (0..${max})` : ''}, ranges like 0-9${space?.names ? ' or class names' : ''} but received ${JSON.stringify(value)}`,
      );
  }
  if (out.length === 0) throw new UsageError(`${flag} is empty`);
  return out;
}

/** Writes a line to stderr (status messages; stdout is kept for data). */
export function note(msg: string): void {
  process.stderr.write(msg + '\n');
}

/** The image file name for index i: 000000.png, 000001.png, ... */
export function imageFileName(i: number): string {
  return String(i).padStart(6, '0') + '.png';
}

/** loadGenerator with a progress bar of the tensors copied ('loading generator'). */
export async function loadGeneratorWithProgress(path: string, options: Omit<LoadGeneratorOptions, 'onProgress'>): Promise<Generator> {
  const bar = new ProgressBar(0, { label: 'loading generator', unit: 'tensors' });
  const g = await loadGenerator(path, { ...options, onProgress: (p) => bar.update(p.tensorsDone, p.tensorsTotal) });
  bar.finish();
  return g;
}

/** loadTokenizer with a progress bar of the tensors copied ('loading tokenizer'). */
export async function loadTokenizerWithProgress(path: string, options: Omit<LoadTokenizerOptions, 'onProgress'>): Promise<Tokenizer> {
  const bar = new ProgressBar(0, { label: 'loading tokenizer', unit: 'tensors' });
  const t = await loadTokenizer(path, { ...options, onProgress: (p) => bar.update(p.tensorsDone, p.tensorsTotal) });
  bar.finish();
  return t;
}

/** --preset (a preset name) and --precision (f32, f16, bf16) of MODEL_OPTIONS, checked. */
export function modelOptions(values: { preset?: string; precision?: string }): { preset: PresetName | undefined; precision: Precision | undefined } {
  if (values.preset !== undefined && !(PRESET_NAMES as readonly string[]).includes(values.preset))
    throw new UsageError(`--preset expects one of ${PRESET_NAMES.join(', ')} but received ${JSON.stringify(values.preset)}`);
  if (values.precision !== undefined && !['f32', 'f16', 'bf16'].includes(values.precision))
    throw new UsageError(`--precision expects one of f32, f16, bf16 but received ${JSON.stringify(values.precision)}`);
  return { preset: values.preset as PresetName | undefined, precision: values.precision as Precision | undefined };
}

/** The values of SAMPLING_OPTIONS, checked (undefined: the model's default). */
export function samplingOptions(values: ParsedValues<typeof SAMPLING_OPTIONS>) {
  const topP = numberOption(values['top-p'], '--top-p');
  if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new UsageError(`--top-p expects a number greater than 0 and at most 1 but received ${values['top-p']}`);
  const temperature = numberOption(values.temperature, '--temperature');
  if (temperature !== undefined && !(temperature > 0)) throw new UsageError(`--temperature expects a number > 0 but received ${values.temperature}`);
  const guidanceScale = numberOption(values['guidance-scale'], '--guidance-scale');
  if (guidanceScale !== undefined && guidanceScale < 0) throw new UsageError(`--guidance-scale expects a number >= 0 but received ${values['guidance-scale']}`);
  const guidanceScalePow = numberOption(values['guidance-pow'], '--guidance-pow');
  if (guidanceScalePow !== undefined && guidanceScalePow < 0) throw new UsageError(`--guidance-pow expects a number >= 0 but received ${values['guidance-pow']}`);
  return { guidanceScale, guidanceScalePow, temperature, topK: intOption(values['top-k'], '--top-k', 0), topP, seed: seedOption(values.seed) };
}
