// Class names: the 1000 ImageNet-1k classes the released generators are conditioned on
// (lib/imagenet-classes.ts) or a model's own list (the demo's ten). A name is matched,
// case- and space-insensitively, against each class's comma-separated synonyms:
// "golden retriever" is 207, "tabby" 281. A name that is a synonym of several classes
// ("crane": the bird 134 and the machine 517) resolves to the one whose first name it
// is, else is refused with the candidates; an unknown name lists the closest ones.
import { ClassNameError } from './errors.js';
import { IMAGENET_CLASSES } from './imagenet-classes.js';

export { IMAGENET_CLASSES };

function normalize(s: string): string {
  return s.toLowerCase().replace(/[_\s]+/g, ' ').trim();
}

/** The synonyms of one class entry ("tabby, tabby cat" -> ["tabby", "tabby cat"]). */
export function classSynonyms(entry: string): string[] {
  return entry.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

/** The display name of class `id`: its first synonym ("golden retriever"). */
export function className(id: number, classes: readonly string[] = IMAGENET_CLASSES): string {
  const e = classes[id];
  if (e === undefined) throw new RangeError(`class id ${id} is out of range 0..${classes.length - 1}`);
  return classSynonyms(e)[0] ?? e;
}

/** Levenshtein distance (for "did you mean" suggestions). */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

function describe(ids: readonly number[], classes: readonly string[]): string {
  return ids.map((id) => `${id} (${classes[id]})`).join(', ');
}

/**
 * Classes whose synonyms contain `query` (case-insensitive), in id order; a query of
 * digits also matches that id. The empty query lists every class.
 */
export function searchClasses(query: string, classes: readonly string[] = IMAGENET_CLASSES): { id: number; names: string[] }[] {
  const q = normalize(query);
  const out: { id: number; names: string[] }[] = [];
  classes.forEach((entry, id) => {
    if (q === '' || normalize(entry).includes(q) || (/^\d+$/.test(q) && Number(q) === id)) out.push({ id, names: classSynonyms(entry) });
  });
  return out;
}

/**
 * The class id for a name (or a string of digits, taken as the id). Throws a
 * ClassNameError listing the candidates when the name is ambiguous or unknown.
 */
export function resolveClassName(query: string, classes: readonly string[] = IMAGENET_CLASSES, what = 'class'): number {
  const q = normalize(query);
  if (/^\d+$/.test(q)) {
    const id = Number(q);
    if (id >= classes.length) throw new ClassNameError(`${what} ${id} is out of range: the model has ${classes.length} classes (0..${classes.length - 1})`, query, []);
    return id;
  }
  if (q === '') throw new ClassNameError(`empty ${what} name`, query, []);
  const exact: number[] = [];
  const primary: number[] = [];
  classes.forEach((entry, id) => {
    const syn = classSynonyms(entry).map(normalize);
    if (syn.includes(q)) exact.push(id);
    if (syn[0] === q) primary.push(id);
  });
  if (exact.length === 1) return exact[0]!;
  if (primary.length === 1) return primary[0]!;
  if (exact.length > 1) {
    throw new ClassNameError(`${what} name ${JSON.stringify(query)} is ambiguous: it names ${describe(exact, classes)}; pass the id or a longer name`, query, exact);
  }
  // Unknown: the classes containing it, else the nearest by edit distance.
  let candidates = searchClasses(q, classes).map((m) => m.id);
  if (candidates.length === 0) {
    const scored = classes.map((entry, id) => ({ id, d: Math.min(...classSynonyms(entry).map((s) => editDistance(q, normalize(s)))) }));
    const limit = Math.max(2, Math.floor(q.length / 3));
    candidates = scored.filter((s) => s.d <= limit).sort((a, b) => a.d - b.d || a.id - b.id).map((s) => s.id);
  }
  candidates = candidates.slice(0, 8);
  const hint = candidates.length ? `; did you mean ${describe(candidates, classes)}?` : classes === IMAGENET_CLASSES ? '; `rargen classes WORD` searches the 1000 ImageNet classes' : `; the classes are: ${classes.map((e, i) => `${i} ${className(i, classes)}`).join(', ')}`;
  throw new ClassNameError(`unknown ${what} name ${JSON.stringify(query)}${hint}`, query, candidates);
}
