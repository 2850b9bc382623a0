// rargen decode: token sequences (a `generate --tokens-out` file, a JSON array of
// arrays, or pretokenized JSONL) -> PNG images DIR/000000.png, ... in file order.
import { readFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadTokenizer, decode } from '../generate.js';
import { savePng } from '../image.js';
import { ProgressBar } from '../progress.js';
import { imageFileName, note, parseCommandArgs, requireOption, UsageError, helpShown, runOptions, STRING, RUN_OPTIONS } from './_shared.js';

export const summary = 'decode token sequences to PNG images with the MaskGIT-VQGAN tokenizer';

const USAGE = `Usage: rargen decode --tokenizer FILE --tokens FILE.json --out DIR [options]

Decodes token sequences to 8-bit RGB PNGs: DIR/000000.png, DIR/000001.png, ...
The tokens file is {"tokens": [[...], ...]} (as generate --tokens-out writes it),
a JSON array of arrays, or JSON lines with a "tokens" field (pretokenized data).

Options:
  --tokenizer FILE   MaskGIT-VQGAN checkpoint
  --tokens FILE      token sequences (see above)
  --out DIR          output folder
  --batch-size N     images per batch (default 16)
  --device D         auto, cpu, cuda or cuda:N (default auto)
  -h, --help         show this help`;

/** Reads token sequences from any of the accepted layouts. */
export async function readTokensFile(file: string): Promise<number[][]> {
  const text = await readFile(file, 'utf8');
  const bad = (why: string) => new UsageError(`${file}: ${why}`);
  let seqs: unknown;
  try {
    const v = JSON.parse(text) as unknown;
    seqs = Array.isArray(v) ? v : (v as { tokens?: unknown })?.tokens;
  } catch {
    // JSON lines
    seqs = text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0)
      .map((l, i) => {
        try {
          return (JSON.parse(l) as { tokens?: unknown }).tokens;
        } catch {
          throw bad(`line ${i + 1} is not JSON`);
        }
      });
  }
  if (!Array.isArray(seqs) || seqs.length === 0) throw bad('expected {"tokens": [[...], ...]}, an array of token arrays, or JSON lines with "tokens"');
  seqs.forEach((s, i) => {
    if (!Array.isArray(s)) throw bad(`sequence ${i} is not an array of tokens`);
  });
  return seqs as number[][];
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, { tokenizer: STRING, tokens: STRING, out: STRING, ...RUN_OPTIONS }, false);
  if (helpShown(values, USAGE)) return 0;
  const tokenizerPath = requireOption(values.tokenizer, '--tokenizer');
  const tokensPath = requireOption(values.tokens, '--tokens');
  const out = requireOption(values.out, '--out');
  const { batchSize, device } = runOptions(values, 16);
  const seqs = await readTokensFile(tokensPath);
  const tokenizer = await loadTokenizer(tokenizerPath, { device });
  try {
    note(`rargen: ${tokenizer.device.reason}`);
    const T = tokenizer.numTokens;
    const V = tokenizer.config.codebookSize;
    seqs.forEach((seq, b) => {
      if (seq.length !== T) throw new UsageError(`${tokensPath}: sequence ${b} has ${seq.length} tokens but the tokenizer decodes ${T}`);
      seq.forEach((v, i) => {
        if (!Number.isInteger(v) || v < 0 || v >= V) throw new UsageError(`${tokensPath}: expected integer between 0 and ${V - 1} for tokens[${b}][${i}] but received ${JSON.stringify(v)}`);
      });
    });
    await mkdir(out, { recursive: true });
    const bar = new ProgressBar(seqs.length, { label: 'decoding', unit: 'img' });
    for (let s = 0; s < seqs.length; s += batchSize) {
      const chunk = seqs.slice(s, s + batchSize);
      const images = await decode(tokenizer, chunk, { batchSize });
      for (let i = 0; i < images.length; i++) await savePng(join(out, imageFileName(s + i)), images[i]!);
      bar.update(s + chunk.length);
    }
    bar.finish();
    note(`rargen: wrote ${seqs.length} images to ${out}`);
    return 0;
  } finally {
    tokenizer.dispose();
  }
}
