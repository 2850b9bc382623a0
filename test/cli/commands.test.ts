// Command helpers that need no model: class lists, token files, ImageFolder order.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parseClassList, seedOption, imageFileName, UsageError } from '../../lib/commands/_shared.js';
import { readTokensFile } from '../../lib/commands/decode.js';
import { listImageFolder, readClassMap } from '../../lib/commands/tokenize.js';
import { inspectFile } from '../../lib/commands/inspect.js';

let tmp = '';
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'rargen-cmd-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('argument helpers', () => {
  it('parses class lists with ranges', () => {
    expect(parseClassList('207,360')).toEqual([207, 360]);
    expect(parseClassList('1, 5-7,0')).toEqual([1, 5, 6, 7, 0]);
    expect(() => parseClassList('7-5')).toThrow('--classes: range 7-5 is empty');
    expect(() => parseClassList('1.5')).toThrow(UsageError);
  });
  it('parses 64-bit seeds', () => {
    expect(seedOption('18446744073709551615')).toBe(2n ** 64n - 1n);
    expect(() => seedOption('18446744073709551616')).toThrow('--seed must be below 2^64 but received 18446744073709551616');
    expect(seedOption(undefined)).toBeUndefined();
  });
  it('names image files in order', () => {
    expect([0, 1, 123456].map(imageFileName)).toEqual(['000000.png', '000001.png', '123456.png']);
  });
});

describe('readTokensFile', () => {
  it('reads generate --tokens-out, bare arrays and pretokenized JSONL', async () => {
    const a = join(tmp, 'a.json');
    await writeFile(a, JSON.stringify({ classLabels: [1, 2], tokens: [[1, 2], [3, 4]] }));
    expect(await readTokensFile(a)).toEqual([[1, 2], [3, 4]]);
    const b = join(tmp, 'b.json');
    await writeFile(b, '[[5,6]]');
    expect(await readTokensFile(b)).toEqual([[5, 6]]);
    const c = join(tmp, 'c.jsonl');
    await writeFile(c, '{"class_id": 1, "tokens": [7, 8]}\n{"class_id": 2, "tokens": [9, 10]}\n');
    expect(await readTokensFile(c)).toEqual([[7, 8], [9, 10]]);
    const d = join(tmp, 'd.json');
    await writeFile(d, '{"foo": 1}');
    await expect(readTokensFile(d)).rejects.toThrow(/d\.json: expected \{"tokens"/);
  });
});

describe('listImageFolder (torchvision ImageFolder order)', () => {
  it('sorts classes and files by code point, walks nested folders, skips non-images', async () => {
    const root = join(tmp, 'imgs');
    const files = ['b/2.png', 'b/10.PNG', 'b/sub/0.jpg', 'b/a.txt', 'B/x.jpeg', 'a/z.jpg', 'a/Y.png', 'a/q.bmp', 'c/.keep'];
    for (const f of files) {
      await mkdir(join(root, f, '..'), { recursive: true });
      await writeFile(join(root, f), '');
    }
    await writeFile(join(root, 'stray.png'), '');
    const { samples, classes, skipped } = await listImageFolder(root);
    expect(classes).toEqual(['B', 'a', 'b', 'c']);
    expect(samples.map((s) => [relative(root, s.path), s.classId])).toEqual([
      ['B/x.jpeg', 0],
      ['a/Y.png', 1],
      ['a/z.jpg', 1],
      ['b/10.PNG', 2],
      ['b/2.png', 2],
      ['b/sub/0.jpg', 2],
    ]);
    expect(skipped).toBe(1);

    const mapFile = join(tmp, 'map.json');
    await writeFile(mapFile, JSON.stringify({ a: 7, b: 3, B: 0, c: 9 }));
    const mapped = await listImageFolder(root, await readClassMap(mapFile));
    expect(mapped.samples.map((s) => s.classId)).toEqual([0, 7, 7, 3, 3, 3]);
    const arrFile = join(tmp, 'arr.json');
    await writeFile(arrFile, JSON.stringify(['c', 'b', 'a', 'B']));
    expect((await listImageFolder(root, await readClassMap(arrFile))).samples.map((s) => s.classId)).toEqual([3, 2, 2, 1, 1, 1]);
    await writeFile(mapFile, JSON.stringify({ a: 1 }));
    await expect(listImageFolder(root, await readClassMap(mapFile))).rejects.toThrow('--class-map has no id for the class folder "B"');
    await writeFile(mapFile, JSON.stringify({ a: -1 }));
    await expect(readClassMap(mapFile)).rejects.toThrow('expected a non-negative integer for "a" but received -1');
    await expect(listImageFolder(join(tmp, 'empty-nope'))).rejects.toThrow(UsageError);
  });
});

describe('inspectFile', () => {
  it('reports problems of a damaged checkpoint instead of failing', async () => {
    const { saveTorch, openCheckpoint, lazyTensors } = await import('../../lib/io/index.js');
    const src = await openCheckpoint(join(import.meta.dirname, '..', 'fixtures', 'rar-tiny', 'model.bin'));
    const t = lazyTensors(src);
    t.delete('lm_head.bias');
    const file = join(tmp, 'damaged.bin');
    await saveTorch(file, t);
    await src.close();
    const r = await inspectFile(file);
    expect(r.kind).toBe('rar-generator');
    expect(r.valid).toBe(false);
    expect(r.config).not.toBeNull();
    expect(r.problems).toContain('missing keys (1): lm_head.bias');
    expect(r.numTensors).toBe(44);
  });
});
