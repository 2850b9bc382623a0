// Child of the reader fuzz (test/fuzz/fuzz.test.ts via harness.ts): builds the seed
// corpus (the torch-io fixtures plus small files of every format rargen reads, written
// here), then for each case n mutates seed n % seeds (caseBytes), writes it to
// a file and loads it completely with the public readers. A case must load or fail with
// the reader's own error naming the file (RargenIOError; ImageDecodeError for images).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint, openNpz, readNpy, readNpz, saveSafetensors, saveTorch, writeNpy, writeNpz, encodeNpyHeader, RargenIOError } from '../../lib/io/index.js';
import { encodePng, loadImage, ImageDecodeError, createImage } from '../../lib/image.js';
import type { HostTensor } from '../../lib/tensor.js';
import { buildZip, type ZipMember } from '../helpers/zip.js';
import { ZipReader } from '../../lib/io/zip.js';
import { RandomAccessFile } from '../../lib/io/file.js';
import { tableCrc32 } from '../../lib/io/crc32.js';
import { caseRange, runCases, type Outcome } from './child-lib.js';
import { mutate } from './mutate.js';

const FIX = join(import.meta.dirname, '..', 'fixtures', 'torch-io');
type Kind = 'ckpt' | 'npz' | 'npy' | 'png';
type Seed = { name: string; kind: Kind; bytes: Uint8Array; members?: ZipMember[] };

/** A zip's members (stored or deflated), so cases can mutate a member and rebuild the zip with valid CRCs. */
async function zipMembers(path: string): Promise<ZipMember[]> {
  const z = await ZipReader.open(await RandomAccessFile.open(path));
  try {
    const out: ZipMember[] = [];
    for (const n of z.names) out.push({ name: n, data: await z.readAll(z.entry(n)), deflate: z.entry(n).method === 8 });
    return out;
  } finally {
    await z.close();
  }
}

/** PNG chunks with their CRCs recomputed (after a mutation of their data). */
function fixPngCrcs(b: Uint8Array): Uint8Array {
  const out = Buffer.from(b);
  let pos = 8;
  while (pos + 12 <= out.length) {
    const len = out.readUInt32BE(pos);
    if (pos + 12 + len > out.length) break;
    out.writeUInt32BE(tableCrc32(out.subarray(pos + 4, pos + 8 + len)), pos + 8 + len);
    pos += 12 + len;
  }
  return out;
}

/**
 * Case n's bytes. Odd cases of zip seeds mutate one member and rebuild the archive with
 * correct CRCs, and odd PNG cases get their chunk CRCs fixed, so that the mutations
 * reach the parsers behind the checksums (pickles, npy headers, IHDR/IDAT).
 */
function caseBytes(s: Seed, seed: number, n: number): { bytes: Uint8Array; what: string } {
  if (n % 2 === 1 && s.members) {
    const i = Math.floor(n / 2) % s.members.length;
    const m = mutate(s.members[i]!.data, seed, n);
    const members = s.members.map((x, j) => (j === i ? { ...x, data: m.bytes } : x));
    return { bytes: buildZip(members), what: `member ${s.members[i]!.name}: ${m.what}` };
  }
  const m = mutate(s.bytes, seed, n);
  if (n % 2 === 1 && s.kind === 'png') return { bytes: fixPngCrcs(m.bytes), what: `${m.what}, CRCs fixed` };
  return m;
}

async function seeds(dir: string): Promise<Seed[]> {
  const out: Seed[] = [];
  for (const f of ['t_zip.pt', 't_nested.pt', 't_legacy.pt', 't_legacy_p4.pt']) out.push({ name: f, kind: 'ckpt', bytes: readFileSync(join(FIX, f)) });
  out.push({ name: 'ref.npz', kind: 'npz', bytes: readFileSync(join(FIX, 'ref.npz')) });
  const tensors = new Map<string, HostTensor>([
    ['w', { dtype: 'float32', shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i / 3) }],
    ['h', { dtype: 'float16', shape: [5], data: new Uint16Array(5).fill(0x3c00) }],
    ['b', { dtype: 'bfloat16', shape: [2, 2], data: new Uint16Array(4).fill(0x3f80) }],
    ['n', { dtype: 'int64', shape: [], data: BigInt64Array.from([7n]) }],
  ]);
  const st = join(dir, 'seed.safetensors');
  await saveSafetensors(st, tensors);
  out.push({ name: 'seed.safetensors', kind: 'ckpt', bytes: readFileSync(st) });
  const pt = join(dir, 'seed.pt');
  await saveTorch(pt, tensors);
  out.push({ name: 'seed.pt', kind: 'ckpt', bytes: readFileSync(pt) });
  const u = join(dir, 'seed-u.npy');
  await writeNpy(u, { dtype: 'unicode', shape: [3], data: ['ab', 'cde\u00e9', '\u{1f600}'] });
  out.push({ name: 'seed-u.npy', kind: 'npy', bytes: readFileSync(u) });
  const f = join(dir, 'seed-f.npy');
  await writeNpy(f, { dtype: 'float32', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) });
  out.push({ name: 'seed-f.npy', kind: 'npy', bytes: readFileSync(f) });
  const z = join(dir, 'seed.npz');
  await writeNpz(z, { arr_0: { dtype: 'uint8', shape: [2, 2, 2, 3], data: Uint8Array.from({ length: 24 }, (_, i) => i) }, labels: { dtype: 'int64', shape: [2], data: BigInt64Array.of(1n, 2n) } });
  out.push({ name: 'seed.npz', kind: 'npz', bytes: readFileSync(z) });
  const member = (shape: number[], data: Uint8Array) => Buffer.concat([encodeNpyHeader('uint8', shape), data]);
  out.push({
    name: 'seed-deflate.npz',
    kind: 'npz',
    bytes: buildZip([
      { name: 'a.npy', data: member([64], new Uint8Array(64).fill(7)), deflate: true },
      { name: 'b.npy', data: member([4, 4], Uint8Array.from({ length: 16 }, (_, i) => i)), deflate: true },
    ]),
  });
  const img = createImage(7, 5);
  img.data.forEach((_, i) => (img.data[i] = (i * 37) & 0xff));
  out.push({ name: 'seed.png', kind: 'png', bytes: encodePng(img) });
  for (const s of out) {
    if (s.bytes[0] === 0x50 && s.bytes[1] === 0x4b) {
      const p = join(dir, `members-${s.name}`);
      writeFileSync(p, s.bytes);
      s.members = await zipMembers(p);
    }
  }
  return out;
}

async function load(kind: Kind, p: string): Promise<void> {
  if (kind === 'ckpt') {
    const ck = await openCheckpoint(p);
    try {
      for (const [k, t] of ck.tensors) {
        await ck.read(k);
        if (t.dtype === 'float32' || t.dtype === 'float16' || t.dtype === 'bfloat16') await ck.readFloat32(k);
      }
    } finally {
      await ck.close();
    }
  } else if (kind === 'npz') {
    await readNpz(p);
    const z = await openNpz(p);
    try {
      for (const n of z.names) {
        const h = await z.header(n);
        if (h.shape.length && h.shape[0]! > 0) await z.readRows(n, 0, 1);
      }
    } finally {
      await z.close();
    }
  } else if (kind === 'npy') await readNpy(p);
  else await loadImage(p);
}

const { seed, from, to } = caseRange();
const dir = mkdtempSync(join(tmpdir(), 'rargen-fuzz-readers-'));
try {
  const corpus = await seeds(dir);
  await runCases(from, to, async (n): Promise<Outcome> => {
    const s = corpus[n % corpus.length]!;
    const { bytes, what } = caseBytes(s, seed, n);
    const ext = s.name.slice(s.name.indexOf('.'));
    const p = join(dir, `case${n}${ext}`);
    writeFileSync(p, bytes);
    try {
      await load(s.kind, p);
      return { outcome: 'loaded' };
    } catch (e) {
      const ok = (e instanceof RargenIOError || (s.kind === 'png' && e instanceof ImageDecodeError)) && (e as Error).message.includes(p);
      return ok ? { outcome: 'clean' } : { outcome: 'unclean', detail: `${s.name} [${what}]: ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}` };
    } finally {
      rmSync(p, { force: true });
    }
  });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
