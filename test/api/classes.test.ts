// Class names: the shipped ImageNet-1k list, name resolution (exact, ambiguous, unknown),
// `rargen classes`, names in generate(), and the demo model as a first-class generator.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { className, IMAGENET_CLASSES, resolveClassName, searchClasses } from '../../lib/classes.js';
import { ClassNameError } from '../../lib/errors.js';
import { run as classesCmd } from '../../lib/commands/classes.js';
import { parseClassList, UsageError } from '../../lib/commands/_shared.js';
import { generate, loadGenerator } from '../../lib/generate.js';
import { hasModelAddon } from './helpers.js';

afterEach(() => vi.restoreAllMocks());

describe('the ImageNet-1k class list', () => {
  it('has the 1000 classes in index order', () => {
    expect(IMAGENET_CLASSES).toHaveLength(1000);
    const known: [number, string][] = [[0, 'tench'], [1, 'goldfish'], [207, 'golden retriever'], [281, 'tabby'], [360, 'otter'], [980, 'volcano'], [999, 'toilet tissue']];
    for (const [id, name] of known) expect(className(id)).toBe(name);
    expect(IMAGENET_CLASSES[281]).toBe('tabby, tabby cat');
    // one entry is there twice, as in the official list: 'crane' the bird (134) and the machine (517)
    expect(new Set(IMAGENET_CLASSES).size).toBe(999);
    expect([IMAGENET_CLASSES[134], IMAGENET_CLASSES[517]]).toEqual(['crane', 'crane']);
  });
});

describe('resolveClassName', () => {
  it('matches any synonym, case and spacing aside', () => {
    expect(resolveClassName('golden retriever')).toBe(207);
    expect(resolveClassName('Golden_Retriever')).toBe(207);
    expect(resolveClassName('tabby cat')).toBe(281);
    expect(resolveClassName('  TABBY ')).toBe(281);
    expect(resolveClassName('360')).toBe(360);
  });
  it('prefers the class whose first name it is, else lists the candidates', () => {
    expect(resolveClassName('harp')).toBe(594); // 593 is "harmonica, mouth organ, harp, mouth harp"
    const e = (() => {
      try {
        resolveClassName('crane');
      } catch (err) {
        return err as ClassNameError;
      }
    })()!;
    expect(e).toBeInstanceOf(ClassNameError);
    expect(e.code).toBe('RARGEN_CLASS_NAME');
    expect(e.candidates).toEqual([134, 517]);
    expect(e.message).toBe('class name "crane" is ambiguous: it names 134 (crane), 517 (crane); pass the id or a longer name');
  });
  it('suggests the nearest names for an unknown one', () => {
    expect(() => resolveClassName('goldn retriever')).toThrow('unknown class name "goldn retriever"; did you mean 207 (golden retriever)?');
    expect(() => resolveClassName('retriever')).toThrow(/did you mean 205 \(flat-coated retriever\), 206 .*209 \(Chesapeake Bay retriever\)\?$/);
    expect(() => resolveClassName('xyzzyq')).toThrow('unknown class name "xyzzyq"; `rargen classes WORD` searches the 1000 ImageNet classes');
    expect(() => resolveClassName('1000')).toThrow('class 1000 is out of range: the model has 1000 classes (0..999)');
  });
  it('searches', () => {
    expect(searchClasses('retriever').map((m) => m.id)).toEqual([205, 206, 207, 208, 209]);
    expect(searchClasses('').length).toBe(1000);
  });
});

describe('--classes (ids, ranges, names), checked before a range is expanded', () => {
  const space = { count: 1000, names: IMAGENET_CLASSES };
  it('mixes ids, ranges and names', () => {
    expect(parseClassList('golden retriever,tabby, 3-5,999', '--classes', space)).toEqual([207, 281, 3, 4, 5, 999]);
  });
  it('refuses out-of-range bounds without expanding them', () => {
    const t0 = performance.now();
    expect(() => parseClassList('0-99999999', '--classes', space)).toThrow('--classes: class 99999999 is out of range: the model has 1000 classes (0..999)');
    expect(performance.now() - t0).toBeLessThan(50);
    expect(() => parseClassList('-1', '--classes', space)).toThrow('--classes expects class ids (0..999), ranges like 0-9 or class names but received "-1"');
    expect(() => parseClassList('crane', '--classes', space)).toThrow(UsageError);
    expect(() => parseClassList('crane', '--classes', space)).toThrow(/^--classes: class name "crane" is ambiguous/);
  });
});

describe('rargen classes', () => {
  it('prints the matching ids and names', async () => {
    const out: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (out.push(String(s)), true));
    expect(await classesCmd(['retriever'])).toBe(0);
    expect(out.join('')).toBe(' 205  flat-coated retriever\n 206  curly-coated retriever\n 207  golden retriever\n 208  Labrador retriever\n 209  Chesapeake Bay retriever\n');
    out.length = 0;
    expect(await classesCmd(['--demo', 'ci'])).toBe(0);
    expect(out.join('')).toBe('   0  circle\n');
  });
});

describe.runIf(hasModelAddon())('the demo model through the API', () => {
  it("loadGenerator('demo') has the demo's sampling defaults and class names; generate() takes names", async () => {
    const g = await loadGenerator('demo', { device: 'cpu' });
    try {
      expect(g.sampling).toEqual({ guidanceScale: 2, guidanceScalePow: 1, temperature: 1 });
      expect(g.classNames?.[4]).toBe('heart');
      const byName = await generate({ generator: g, classLabels: ['circle', 'heart'], seed: 3 });
      const byId = await generate({ generator: g, classLabels: [0, 4], seed: 3 });
      expect(byName.classLabels).toEqual([0, 4]);
      expect(byName.tokens.map((t) => Array.from(t))).toEqual(byId.tokens.map((t) => Array.from(t)));
      await expect(generate({ generator: g, classLabels: ['circle', 'blob'] })).rejects.toThrow(/^classLabels\[1\]: unknown class name "blob"; the classes are: 0 circle,/);
    } finally {
      g.dispose();
    }
  });
});
