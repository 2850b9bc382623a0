// The demo dataset: procedurally drawn 16x16 pictures of ten classes (shapes and
// patterns in random colours, positions and sizes), tokenized by a palette tokenizer:
// every pixel is one of V = 16 fixed colours and its token is that colour's index,
// so a 16x16 picture is N = 256 tokens in raster order, exactly the shape of the
// released models' token grid. Decoding is a palette lookup and nearest-neighbour
// upscaling. A RAR model small enough to train on a laptop CPU in minutes learns
// these classes; `rargen generate --demo --class star` samples from it.
//
// Everything is drawn from a seeded RNG, so a (seed, index) pair always gives the
// same picture on every machine.
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createImage, type RgbImage } from '../image.js';
import { Rng, deriveSeed } from '../train/rng.js';

export const DEMO_SIZE = 16; // pixels per side = tokens per side
export const DEMO_SEQ_LEN = DEMO_SIZE * DEMO_SIZE;

/** The PICO-8 palette: 16 colours, token i = DEMO_PALETTE[i]. */
export const DEMO_PALETTE: readonly (readonly [number, number, number])[] = [
  [0x00, 0x00, 0x00], // 0 black
  [0x1d, 0x2b, 0x53], // 1 dark blue
  [0x7e, 0x25, 0x53], // 2 dark purple
  [0x00, 0x87, 0x51], // 3 dark green
  [0xab, 0x52, 0x36], // 4 brown
  [0x5f, 0x57, 0x4f], // 5 dark grey
  [0xc2, 0xc3, 0xc7], // 6 light grey
  [0xff, 0xf1, 0xe8], // 7 white
  [0xff, 0x00, 0x4d], // 8 red
  [0xff, 0xa3, 0x00], // 9 orange
  [0xff, 0xec, 0x27], // 10 yellow
  [0x00, 0xe4, 0x36], // 11 green
  [0x29, 0xad, 0xff], // 12 blue
  [0x83, 0x76, 0x9c], // 13 lavender
  [0xff, 0x77, 0xa8], // 14 pink
  [0xff, 0xcc, 0xaa], // 15 peach
];
export const DEMO_CODEBOOK_SIZE = DEMO_PALETTE.length;

export const DEMO_CLASSES = ['circle', 'square', 'triangle', 'cross', 'heart', 'star', 'stripes', 'checker', 'smiley', 'arrow'] as const;
export type DemoClass = (typeof DEMO_CLASSES)[number];
export const DEMO_NUM_CLASSES = DEMO_CLASSES.length;

/** Class index of a name (case-insensitive) or of a number string; throws listing the names. */
export function demoClassIndex(name: string | number): number {
  if (typeof name === 'number' || /^\d+$/.test(name)) {
    const i = Number(name);
    if (i >= 0 && i < DEMO_NUM_CLASSES) return i;
  } else {
    const i = (DEMO_CLASSES as readonly string[]).indexOf(name.trim().toLowerCase());
    if (i >= 0) return i;
  }
  throw new RangeError(`Expected a demo class name (${DEMO_CLASSES.join(', ')}) or an index 0..${DEMO_NUM_CLASSES - 1} but received ${JSON.stringify(name)}`);
}

type Inside = (u: number, v: number) => boolean;

/** Two distinct colours with enough contrast (different brightness classes). */
function pickColours(rng: Rng): [number, number] {
  const bg = rng.nextInt(DEMO_CODEBOOK_SIZE);
  for (;;) {
    const fg = rng.nextInt(DEMO_CODEBOOK_SIZE);
    if (fg !== bg && Math.abs(luma(fg) - luma(bg)) > 40) return [bg, fg];
  }
}

function luma(i: number): number {
  const [r, g, b] = DEMO_PALETTE[i]!;
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

/** Draws a shape given in normalised coordinates (u, v in [-1, 1] over its box). */
function drawShape(img: Uint8Array, inside: Inside, cx: number, cy: number, r: number, colour: number): void {
  for (let y = 0; y < DEMO_SIZE; y++)
    for (let x = 0; x < DEMO_SIZE; x++) {
      const u = (x + 0.5 - cx) / r;
      const v = (y + 0.5 - cy) / r;
      if (u >= -1.05 && u <= 1.05 && v >= -1.05 && v <= 1.05 && inside(u, v)) img[y * DEMO_SIZE + x] = colour;
    }
}

function pointInPolygon(px: number, py: number, poly: readonly number[]): boolean {
  let inside = false;
  const n = poly.length / 2;
  for (let i = 0, j = n - 1; i < n; j = i++) {
    const xi = poly[2 * i]!, yi = poly[2 * i + 1]!, xj = poly[2 * j]!, yj = poly[2 * j + 1]!;
    if (yi > py !== yj > py && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

const STAR: number[] = (() => {
  const p: number[] = [];
  for (let k = 0; k < 10; k++) {
    const a = -Math.PI / 2 + (k * Math.PI) / 5;
    const rad = k % 2 === 0 ? 1.0 : 0.42;
    p.push(rad * Math.cos(a), rad * Math.sin(a) + 0.08);
  }
  return p;
})();

const SHAPES: Record<string, Inside> = {
  circle: (u, v) => u * u + v * v <= 0.95,
  square: (u, v) => Math.abs(u) <= 0.8 && Math.abs(v) <= 0.8,
  triangle: (u, v) => v >= -0.9 && v <= 0.85 && Math.abs(u) <= (v + 0.9) / 1.75,
  cross: (u, v) => (Math.abs(u) <= 0.32 && Math.abs(v) <= 0.95) || (Math.abs(v) <= 0.32 && Math.abs(u) <= 0.95),
  heart: (u, v) => {
    const x = u * 1.2;
    const y = -v * 1.2 + 0.25;
    const a = x * x + y * y - 1;
    return a * a * a - x * x * y * y * y <= 0;
  },
  star: (u, v) => pointInPolygon(u, v, STAR),
};

/** Draws one picture of class `cls` with randomness from `rng`: 256 palette indices, raster order. */
export function drawDemoPicture(cls: number, rng: Rng): Uint8Array {
  const name = DEMO_CLASSES[cls];
  if (name === undefined) throw new RangeError(`drawDemoPicture: expected a class index 0..${DEMO_NUM_CLASSES - 1} but received ${cls}`);
  const img = new Uint8Array(DEMO_SEQ_LEN);
  const [bg, fg] = pickColours(rng);
  img.fill(bg);
  const S = DEMO_SIZE;
  // A box of radius r (5..7 px) centred so that it stays inside the picture.
  const r = 5 + rng.nextInt(3);
  const cx = r + rng.nextInt(S - 2 * r + 1);
  const cy = r + rng.nextInt(S - 2 * r + 1);
  switch (name) {
    case 'stripes': {
      const w = 2 + rng.nextInt(2); // stripe width 2..3
      const dir = rng.nextInt(3); // 0 horizontal, 1 vertical, 2 diagonal
      const phase = rng.nextInt(2 * w);
      for (let y = 0; y < S; y++)
        for (let x = 0; x < S; x++) {
          const t = dir === 0 ? y : dir === 1 ? x : x + y;
          if (Math.floor((t + phase) / w) % 2 === 0) img[y * S + x] = fg;
        }
      break;
    }
    case 'checker': {
      const w = 2 + rng.nextInt(3); // cell 2..4
      const px = rng.nextInt(w), py = rng.nextInt(w);
      for (let y = 0; y < S; y++)
        for (let x = 0; x < S; x++) if ((Math.floor((x + px) / w) + Math.floor((y + py) / w)) % 2 === 0) img[y * S + x] = fg;
      break;
    }
    case 'smiley': {
      drawShape(img, SHAPES.circle!, cx, cy, r + 0.5, fg);
      // eyes and mouth in the background colour
      const eye = (u: number, v: number) => (Math.abs(u + 0.38) <= 0.16 || Math.abs(u - 0.38) <= 0.16) && Math.abs(v + 0.3) <= 0.2;
      const mouth = (u: number, v: number) => {
        const d = Math.sqrt(u * u + (v + 0.05) * (v + 0.05));
        return v > 0.18 && d >= 0.42 && d <= 0.68;
      };
      drawShape(img, eye, cx, cy, r + 0.5, bg);
      drawShape(img, mouth, cx, cy, r + 0.5, bg);
      break;
    }
    case 'arrow': {
      const dir = rng.nextInt(4); // 0 right, 1 down, 2 left, 3 up
      const right: Inside = (u, v) => (u >= -0.95 && u <= 0.1 && Math.abs(v) <= 0.25) || (u > 0.1 && u <= 0.95 && Math.abs(v) <= (0.95 - u) * 0.95);
      const rot: Inside = (u, v) => (dir === 0 ? right(u, v) : dir === 1 ? right(v, -u) : dir === 2 ? right(-u, -v) : right(-v, u));
      drawShape(img, rot, cx, cy, r + 0.5, fg);
      break;
    }
    default:
      drawShape(img, SHAPES[name]!, cx, cy, r + 0.5, fg);
  }
  return img;
}

/** Sample `index` of a demo dataset with `seed`: its class (index mod 10, shuffled per block) and picture. */
export function demoSample(seed: number, index: number): { classId: number; tokens: Uint8Array } {
  const rng = new Rng(deriveSeed(seed, 0xde40, index));
  const classId = rng.nextInt(DEMO_NUM_CLASSES);
  return { classId, tokens: drawDemoPicture(classId, rng) };
}

/** Writes `count` demo samples as pretokenized JSON lines (the training data format). */
export async function writeDemoDataset(path: string, count: number, seed = 0): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const out = createWriteStream(path);
  const done = new Promise<void>((res, rej) => {
    out.on('finish', res);
    out.on('error', rej);
  });
  for (let i = 0; i < count; i++) {
    const s = demoSample(seed, i);
    const line = `{"class_id": ${s.classId}, "tokens": [${Array.prototype.join.call(s.tokens, ', ')}]}\n`;
    if (!out.write(line)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  out.end();
  await done;
}

/** Palette decoding: tokens (256, values < 16) -> an RGB picture upscaled by nearest neighbour. */
export function decodeDemoTokens(tokens: ArrayLike<number>, outSize = 128): RgbImage {
  if (tokens.length !== DEMO_SEQ_LEN) throw new RangeError(`decodeDemoTokens: expected ${DEMO_SEQ_LEN} tokens but received ${tokens.length}`);
  if (!Number.isInteger(outSize) || outSize < DEMO_SIZE) throw new RangeError(`decodeDemoTokens: expected an integer outSize >= ${DEMO_SIZE} but received ${outSize}`);
  const img = createImage(outSize, outSize);
  for (let y = 0; y < outSize; y++) {
    const ty = Math.floor((y * DEMO_SIZE) / outSize);
    for (let x = 0; x < outSize; x++) {
      const t = tokens[ty * DEMO_SIZE + Math.floor((x * DEMO_SIZE) / outSize)]!;
      const c = DEMO_PALETTE[t];
      if (!c) throw new RangeError(`decodeDemoTokens: token ${t} is outside the ${DEMO_CODEBOOK_SIZE}-colour palette`);
      const o = (y * outSize + x) * 3;
      img.data[o] = c[0];
      img.data[o + 1] = c[1];
      img.data[o + 2] = c[2];
    }
  }
  return img;
}

/** Palette encoding of a 16x16 RGB picture: each pixel to its nearest palette colour. */
export function encodeDemoPicture(img: RgbImage): Uint8Array {
  if (img.width !== DEMO_SIZE || img.height !== DEMO_SIZE) throw new RangeError(`encodeDemoPicture: expected a ${DEMO_SIZE}x${DEMO_SIZE} picture but received ${img.width}x${img.height}`);
  const out = new Uint8Array(DEMO_SEQ_LEN);
  for (let p = 0; p < DEMO_SEQ_LEN; p++) {
    let best = 0;
    let bestD = Infinity;
    for (let k = 0; k < DEMO_CODEBOOK_SIZE; k++) {
      const c = DEMO_PALETTE[k]!;
      const d = (img.data[3 * p]! - c[0]) ** 2 + (img.data[3 * p + 1]! - c[1]) ** 2 + (img.data[3 * p + 2]! - c[2]) ** 2;
      if (d < bestD) {
        bestD = d;
        best = k;
      }
    }
    out[p] = best;
  }
  return out;
}

/** The two most frequent colours of a picture and its foreground mask (for sample checks). */
export function demoTwoColourMask(tokens: ArrayLike<number>): { bg: number; fg: number; mask: Uint8Array } {
  const counts = new Int32Array(DEMO_CODEBOOK_SIZE);
  for (let i = 0; i < tokens.length; i++) counts[tokens[i]!]!++;
  const order = [...counts.keys()].sort((a, b) => counts[b]! - counts[a]!);
  const bg = order[0]!;
  const fg = order[1]!;
  const mask = new Uint8Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) mask[i] = tokens[i] === bg ? 0 : 1;
  return { bg, fg, mask };
}
