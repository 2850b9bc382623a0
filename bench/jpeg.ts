// JPEG decode speed (issue 11 item 5): rargen's decodeJpeg (sharp: libvips + libjpeg-turbo,
// Pillow-exact) against jpeg-js (pure JS, the previous decoder), one image at a time as
// `rargen tokenize` reads them. Inputs: ImageNet-like 500x375 photo-like images (smooth
// blobs, hard edges, sensor-like noise) encoded by sharp at quality 90: two baseline 4:2:0,
// one progressive 4:2:0, one baseline 4:4:4. Per decoder and file: the median of `--iters`
// decodes (ms); per image: the mean of those medians. Also how far jpeg-js's pixels are
// from sharp's (= Pillow's). Prints one JSON object.
// Usage: node dist/bench/jpeg.js [--iters 30]
import { performance } from 'node:perf_hooks';
import { cpus, loadavg } from 'node:os';
import sharp from 'sharp';
import jpegjs from 'jpeg-js';
import { decodeJpeg } from '../lib/image.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

/** A deterministic photo-like RGB image. */
function photo(w: number, h: number, seed: number): Buffer {
  let s = seed >>> 0;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const blobs = Array.from({ length: 24 }, () => ({ x: rnd() * w, y: rnd() * h, r: 20 + rnd() * 120, c: [rnd() * 300 - 120, rnd() * 300 - 120, rnd() * 300 - 120] }));
  const out = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const edge = (x + 2 * y) % 97 < 48 ? 25 : -25; // hard edges
      for (let c = 0; c < 3; c++) {
        let v = 90 + edge;
        for (const b of blobs) v += b.c[c]! * Math.exp(-((x - b.x) ** 2 + (y - b.y) ** 2) / (2 * b.r * b.r));
        v += (rnd() - 0.5) * 24;
        out[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  return out;
}

function median(a: number[]): number {
  const s = [...a].sort((p, q) => p - q);
  return s[s.length >> 1]!;
}

const W = 500;
const H = 375;
const iters = arg('iters', 30);
const files: Buffer[] = [];
for (let k = 0; k < 4; k++) {
  const raw = sharp(photo(W, H, 1000 + k), { raw: { width: W, height: H, channels: 3 } });
  const opts = k === 3 ? { quality: 90, chromaSubsampling: '4:4:4' } : { quality: 90, chromaSubsampling: '4:2:0', progressive: k === 2 };
  files.push(await raw.jpeg(opts).toBuffer());
}

let maxDiff = 0;
let bytesDiffer = 0;
for (const f of files) {
  const a = await decodeJpeg(f);
  const b = jpegjs.decode(f, { useTArray: true, formatAsRGBA: false });
  for (let i = 0; i < a.data.length; i++) {
    const d = Math.abs(a.data[i]! - b.data[i]!);
    if (d) bytesDiffer++;
    maxDiff = Math.max(maxDiff, d);
  }
}

/** Median ms per image over the set, and per file. */
async function time(decode: (f: Buffer) => unknown): Promise<{ mean: number; perFile: number[] }> {
  for (const f of files) await decode(f); // warm-up
  const per: number[][] = files.map(() => []);
  for (let i = 0; i < iters; i++)
    for (let k = 0; k < files.length; k++) {
      const t0 = performance.now();
      await decode(files[k]!);
      per[k]!.push(performance.now() - t0);
    }
  const perFile = per.map(median);
  return { mean: perFile.reduce((a, b) => a + b, 0) / files.length, perFile };
}

const kind = (k: number) => (k === 3 ? 'baseline 4:4:4' : k === 2 ? 'progressive 4:2:0' : 'baseline 4:2:0');
const sharpT = await time((f) => decodeJpeg(f));
const jpegjsT = await time((f) => jpegjs.decode(f, { useTArray: true, formatAsRGBA: false }));
console.log(
  JSON.stringify(
    {
      bench: 'jpeg-decode',
      image: `${W}x${H}`,
      iters,
      files: files.map((f, k) => ({ kind: kind(k), bytes: f.length, sharp_ms: +sharpT.perFile[k]!.toFixed(3), jpegjs_ms: +jpegjsT.perFile[k]!.toFixed(3) })),
      sharp_ms_per_image: +sharpT.mean.toFixed(3),
      jpegjs_ms_per_image: +jpegjsT.mean.toFixed(3),
      speedup: +(jpegjsT.mean / sharpT.mean).toFixed(2),
      jpegjs_vs_sharp: { max_abs_diff: maxDiff, bytes_differ_fraction: +(bytesDiffer / (files.length * W * H * 3)).toFixed(4) },
      versions: { sharp: sharp.versions.sharp, vips: sharp.versions.vips, node: process.version },
      cpus: cpus().length,
      cpu: cpus()[0]?.model,
      load_avg: loadavg().map((x) => +x.toFixed(2)),
    },
    null,
    2,
  ),
);
