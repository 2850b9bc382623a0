// rargen tokenize --ten-crop (in process): ten lines per image, in torchvision TenCrop's
// order, each the tokens of that crop; the flag and its relation to --flip in --help.
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { run } from '../../lib/commands/tokenize.js';
import { encode, loadTokenizer } from '../../lib/generate.js';
import { createImage, savePng, tenCropArr, type RgbImage } from '../../lib/image.js';
import { hasModelAddon } from '../api/helpers.js';
import { tempDir } from '../helpers/tmp.js';

const FIX = join(import.meta.dirname, '..', 'fixtures');
const tmp = tempDir('tokenize-tencrop');

function noise(w: number, h: number, seed: number): RgbImage {
  const img = createImage(w, h);
  let a = seed;
  for (let i = 0; i < img.data.length; i++) {
    a = (Math.imul(a, 1103515245) + 12345) >>> 0;
    img.data[i] = (a >>> 16) & 255;
  }
  return img;
}

function quiet<T>(fn: () => Promise<T>): Promise<T> {
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  return fn().finally(() => spy.mockRestore());
}

describe('tokenize --ten-crop', () => {
  it('--help names the flag that reproduces maskgitvq.jsonl', async () => {
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      expect(await run(['--help'])).toBe(0);
      const help = spy.mock.calls.map((c) => String(c[0])).join('');
      expect(help).toMatch(/--ten-crop[\s\S]*TenCrop[\s\S]*maskgitvq\.jsonl/);
    } finally {
      spy.mockRestore();
    }
  });

  it('refuses --flip with --ten-crop (the ten crops include the flips)', async () => {
    await expect(run(['--tokenizer', 't', '--images', 'i', '--out', 'o', '--flip', '--ten-crop'])).rejects.toThrow(/--ten-crop already writes the flipped crops/);
  });

  it.runIf(hasModelAddon())('writes ten lines per image, in TenCrop order, each the tokens of its crop', async () => {
    const root = join(tmp, 'folder');
    const tokFile = join(FIX, 'vqgan-tiny', 'model.bin'); // 64x64: crops of the ADM crop to int(70.4) = 70
    const a = noise(90, 75, 1);
    const b = noise(70, 100, 2);
    await mkdir(join(root, 'dog'), { recursive: true });
    await mkdir(join(root, 'cat'), { recursive: true });
    await savePng(join(root, 'dog', 'a.png'), a);
    await savePng(join(root, 'cat', 'b.png'), b);
    const out = join(tmp, 'ten.jsonl');
    expect(await quiet(() => run(['--tokenizer', tokFile, '--images', root, '--out', out, '--device', 'cpu', '--ten-crop', '--batch-size', '1']))).toBe(0);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(20);
    expect(lines.map((l) => l.class_id)).toEqual([...Array(10).fill(0), ...Array(10).fill(1)]); // cat = 0 first
    expect(Object.keys(lines[0])).toEqual(['class_id', 'tokens']);
    const vq = await loadTokenizer(tokFile, { device: 'cpu' });
    try {
      const want = await encode(vq, [...tenCropArr(b, 64), ...tenCropArr(a, 64)]);
      expect(lines.map((l) => l.tokens)).toEqual(want.map((t) => Array.from(t)));
      // The ten crops are different images: not all lines of an image are equal.
      expect(new Set(lines.slice(0, 10).map((l) => JSON.stringify(l.tokens))).size).toBeGreaterThan(5);
    } finally {
      vq.dispose();
    }
  });
});
