// rargen inspect FILE [--json]: what a checkpoint holds, read from its index only
// (no tensor data): every tensor's name, dtype and shape, the model kind, the config
// inferred from the shapes, the matching preset, and whether every shape fits.
import { openCheckpoint } from '../io/index.js';
import {
  detectModelKind,
  generatorKeysHint,
  inferGeneratorConfig,
  inferTokenizerConfig,
  matchPreset,
  validateGeneratorWeights,
  validateTokenizerWeights,
  type GeneratorConfig,
  type ModelKind,
  type TokenizerConfig,
} from '../config.js';
import { shapeToString } from '../tensor.js';
import { parseCommandArgs, UsageError, helpShown } from './_shared.js';

export const summary = 'list a checkpoint\'s tensors, its model kind and inferred config';

const USAGE = `Usage: rargen inspect FILE [--json]

Reads a checkpoint's index (torch zip, torch legacy or safetensors) and prints every
tensor's name, dtype and shape, the detected model kind (rar-generator, maskgit-vqgan
or unknown), the config inferred from the shapes, and whether the weights are complete.

Options:
  --json      print one JSON object instead of text
  -h, --help  show this help`;

export interface InspectReport {
  file: string;
  format: string;
  kind: ModelKind;
  numTensors: number;
  numParams: number;
  /** Inferred config, or null when the kind is unknown or inference failed. */
  config: GeneratorConfig | TokenizerConfig | null;
  /** Release preset matching a generator's sizes. */
  preset: string | null;
  /** True when every expected tensor is present with the expected shape and nothing else is. */
  valid: boolean;
  /** Why the config could not be inferred or the weights do not fit. */
  problems: string | null;
  tensors: { name: string; dtype: string; shape: number[] }[];
}

/** Builds the report for one checkpoint. */
export async function inspectFile(file: string): Promise<InspectReport> {
  const ckpt = await openCheckpoint(file);
  try {
    const tensors = [...ckpt.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] }));
    const numParams = [...ckpt.tensors.values()].reduce((s, t) => s + t.numel, 0);
    const kind = detectModelKind(ckpt.tensors);
    let config: GeneratorConfig | TokenizerConfig | null = null;
    let preset: string | null = null;
    let problems: string | null = null;
    let valid = false;
    try {
      if (kind === 'rar-generator') {
        const c = inferGeneratorConfig(ckpt.tensors);
        config = c;
        preset = matchPreset(c)?.name ?? null;
        validateGeneratorWeights(ckpt.tensors, c);
        valid = true;
      } else if (kind === 'maskgit-vqgan') {
        const c = inferTokenizerConfig(ckpt.tensors);
        config = c;
        validateTokenizerWeights(ckpt.tensors, c);
        valid = true;
      } else {
        problems = `not a RAR generator (${generatorKeysHint()}) nor a MaskGIT-VQGAN (quantize.embedding.weight, decoder.*)`;
      }
    } catch (e) {
      problems = (e as Error).message;
    }
    return { file, format: ckpt.format, kind, numTensors: tensors.length, numParams, config, preset, valid, problems, tensors };
  } finally {
    await ckpt.close();
  }
}

function formatCount(n: number): string {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + 'B';
  if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (n >= 1e3) return (n / 1e3).toFixed(1) + 'K';
  return String(n);
}

export function formatReport(r: InspectReport): string {
  const lines: string[] = [];
  lines.push(`${r.file}: ${r.format}, ${r.numTensors} tensors, ${formatCount(r.numParams)} parameters (${r.numParams})`);
  lines.push(`kind: ${r.kind}${r.preset ? ` (preset ${r.preset})` : ''}`);
  if (r.config) {
    lines.push('config:');
    for (const [k, v] of Object.entries(r.config)) lines.push(`  ${k}: ${Array.isArray(v) ? '[' + v.join(', ') + ']' : v}`);
  }
  lines.push(r.valid ? 'weights: complete, every shape as expected' : `weights: ${r.problems ?? 'unknown problem'}`);
  lines.push('tensors:');
  const w = Math.max(...r.tensors.map((t) => t.name.length), 4);
  for (const t of r.tensors) lines.push(`  ${t.name.padEnd(w)}  ${t.dtype.padEnd(8)}  ${shapeToString(t.shape)}`);
  return lines.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { json: { type: 'boolean' } });
  if (helpShown(values, USAGE)) return 0;
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'a checkpoint FILE is required' : `expected one FILE but received ${positionals.length}`);
  const report = await inspectFile(positionals[0]!);
  process.stdout.write((values.json ? JSON.stringify(report, null, 2) : formatReport(report)) + '\n');
  return 0;
}
