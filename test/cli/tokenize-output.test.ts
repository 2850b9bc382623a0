// rargen tokenize's output and bad images (issue 12): --out is replaced only when every
// image was encoded (temp file + rename), a corrupt image stops the run naming it and
// --skip-bad, and with --skip-bad the bad images are skipped and counted.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '../../lib/commands/tokenize.js';
import { decode, encode, loadTokenizer } from '../../lib/generate.js';
import { savePng } from '../../lib/image.js';
import { hasModelAddon } from '../api/helpers.js';
import { tempDir } from '../helpers/tmp.js';

const FIX = join(import.meta.dirname, '..', 'fixtures');
const TOK = join(FIX, 'vqgan-tiny', 'model.bin');
const tmp = tempDir('tokenize-out');

describe.runIf(hasModelAddon())('tokenize output', () => {
  it('a corrupt image leaves --out as it was; --skip-bad skips it', async () => {
    const vq = await loadTokenizer(TOK, { device: 'cpu' });
    const root = join(tmp, 'images');
    let good: number[];
    try {
      const [img] = await decode(vq, [Array.from({ length: 256 }, (_, i) => (i * 5) % 64)]);
      mkdirSync(join(root, 'a'), { recursive: true });
      await savePng(join(root, 'a', '1.png'), img!);
      writeFileSync(join(root, 'a', '2.png'), Buffer.from('\x89PNG\r\n\x1a\nnot really', 'latin1'));
      good = Array.from((await encode(vq, [img!]))[0]!);
    } finally {
      vq.dispose();
    }
    const out = join(tmp, 'out', 'pre.jsonl');
    mkdirSync(join(tmp, 'out'));
    writeFileSync(out, 'OLD\n');
    const args = ['--tokenizer', TOK, '--images', root, '--out', out, '--device', 'cpu'];
    await expect(run(args)).rejects.toThrow(`${join(root, 'a', '2.png')}: PNG has no IHDR chunk`);
    await expect(run(args)).rejects.toThrow(`(${out} is left as it was; pass --skip-bad to skip unreadable images)`);
    expect(readFileSync(out, 'utf8')).toBe('OLD\n');
    expect(readdirSync(join(tmp, 'out'))).toEqual(['pre.jsonl']); // no temp file left behind
    expect(await run([...args, '--skip-bad'])).toBe(0);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toEqual([{ class_id: 0, tokens: good }]);
    expect(readdirSync(join(tmp, 'out'))).toEqual(['pre.jsonl']);
    expect(existsSync(out)).toBe(true);
  });
});
