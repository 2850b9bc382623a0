// Images on the host: 8-bit RGB, height x width x 3 (HWC), as the evaluators and PNG
// files want them. PNG is written and read here with node:zlib (no dependency);
// JPEG is decoded by sharp (libvips + libjpeg-turbo, prebuilt, loaded on first use)
// to the same pixels as PIL. Resizing reproduces Pillow's two-pass fixed-point
// resampler exactly (box and bicubic), so that `center crop` tokenizes an image the
// way the official ADM/RAR scripts do with PIL.
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname, extname } from 'node:path';
import type SharpModule from 'sharp';
import { checkImage, checkImageSize, createImage, ImageDecodeError, type RgbImage } from './rgb.js';
import { decodePng, encodePng, PNG_SIGNATURE } from './png.js';
import { limit } from './io/limits.js';

export { checkImageSize, createImage, ImageDecodeError, type RgbImage } from './rgb.js';
export { decodePng, encodePng, encodePngAsync } from './png.js';

// ---------------------------------------------------------------------------------
// Float <-> uint8

/**
 * Decoder output (B, 3, R, R) float32, NCHW -> B RGB images: clamp to [0, 1], times
 * 255 in float32 arithmetic, truncated (not rounded) to uint8, as the official
 * sampling code does (`(clamp(x, 0, 1) * 255).to(torch.uint8)`). NaN becomes 0.
 */
export function decoderOutputToImages(out: Float32Array, batch: number, height: number, width = height): RgbImage[] {
  const hw = height * width;
  if (out.length !== batch * 3 * hw) throw new RangeError(`decoder output has ${out.length} values, expected ${batch} x 3 x ${height} x ${width}`);
  const images: RgbImage[] = [];
  for (let b = 0; b < batch; b++) {
    const img = createImage(width, height);
    const base = b * 3 * hw;
    for (let c = 0; c < 3; c++) {
      const plane = base + c * hw;
      for (let i = 0; i < hw; i++) img.data[i * 3 + c] = floatToByte(out[plane + i]!);
    }
    images.push(img);
  }
  return images;
}

/** One value of the uint8 conversion: trunc(fround(clamp(x, 0, 1) * 255)). */
export function floatToByte(x: number): number {
  if (!(x > 0)) return 0; // also NaN
  if (x >= 1) return 255;
  // x is a float32; x * 255 is exact in float64, fround gives the float32 product.
  return Math.trunc(Math.fround(x * 255));
}

/** B RGB images (all R x R) -> pixels (B, 3, R, R) float32 in [0, 1] (ToTensor: v / 255). */
export function imagesToPixels(images: readonly RgbImage[]): Float32Array {
  if (images.length === 0) return new Float32Array(0);
  const { width: W, height: H } = images[0]!;
  const hw = W * H;
  const out = new Float32Array(images.length * 3 * hw);
  images.forEach((img, b) => {
    checkImage(img, `images[${b}]`);
    if (img.width !== W || img.height !== H) throw new RangeError(`images[${b}] is ${img.width}x${img.height} but images[0] is ${W}x${H}`);
    const base = b * 3 * hw;
    for (let i = 0; i < hw; i++) {
      for (let c = 0; c < 3; c++) out[base + c * hw + i] = img.data[i * 3 + c]! / 255;
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------
// Grids, flips, crops

/** Tiles images (all the same size) into rows of `cols`, left to right, top to bottom. */
export function imageGrid(images: readonly RgbImage[], cols: number, opts: { padding?: number; background?: [number, number, number] } = {}): RgbImage {
  if (images.length === 0) throw new RangeError('imageGrid needs at least one image');
  if (!Number.isInteger(cols) || cols < 1) throw new RangeError(`Expected integer >= 1 for cols but received ${String(cols)}`);
  const pad = opts.padding ?? 0;
  if (!Number.isInteger(pad) || pad < 0) throw new RangeError(`Expected integer >= 0 for padding but received ${String(pad)}`);
  const { width: w, height: h } = images[0]!;
  images.forEach((img, i) => {
    checkImage(img, `images[${i}]`);
    if (img.width !== w || img.height !== h) throw new RangeError(`images[${i}] is ${img.width}x${img.height} but images[0] is ${w}x${h}`);
  });
  const c = Math.min(cols, images.length);
  const rows = Math.ceil(images.length / c);
  const grid = createImage(c * w + (c + 1) * pad, rows * h + (rows + 1) * pad);
  const bg = opts.background ?? [0, 0, 0];
  if (bg.some((v) => v !== 0)) for (let i = 0; i < grid.width * grid.height; i++) grid.data.set(bg, i * 3);
  images.forEach((img, i) => {
    const x0 = pad + (i % c) * (w + pad);
    const y0 = pad + Math.floor(i / c) * (h + pad);
    for (let y = 0; y < h; y++) {
      grid.data.set(img.data.subarray(y * w * 3, (y + 1) * w * 3), ((y0 + y) * grid.width + x0) * 3);
    }
  });
  return grid;
}

export function flipHorizontal(img: RgbImage): RgbImage {
  const out = createImage(img.width, img.height);
  const { width: W } = img;
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < W; x++) {
      const s = (y * W + x) * 3;
      const d = (y * W + (W - 1 - x)) * 3;
      out.data[d] = img.data[s]!;
      out.data[d + 1] = img.data[s + 1]!;
      out.data[d + 2] = img.data[s + 2]!;
    }
  }
  return out;
}

export function crop(img: RgbImage, x0: number, y0: number, w: number, h: number): RgbImage {
  if (x0 < 0 || y0 < 0 || x0 + w > img.width || y0 + h > img.height) throw new RangeError(`crop ${w}x${h}+${x0}+${y0} is outside the ${img.width}x${img.height} image`);
  const out = createImage(w, h);
  for (let y = 0; y < h; y++) out.data.set(img.data.subarray(((y0 + y) * img.width + x0) * 3, ((y0 + y) * img.width + x0 + w) * 3), y * w * 3);
  return out;
}

// ---------------------------------------------------------------------------------
// Pillow-exact resampling (libImaging/Resample.c, 8 bits per channel)

export type ResampleFilter = 'box' | 'bilinear' | 'bicubic';

const FILTERS: Record<ResampleFilter, { support: number; fn: (x: number) => number }> = {
  box: { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: {
    support: 1,
    fn: (x) => {
      x = Math.abs(x);
      return x < 1 ? 1 - x : 0;
    },
  },
  bicubic: {
    support: 2,
    fn: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

const PRECISION_BITS = 32 - 8 - 2;

/** Fixed-point coefficients and source bounds for one axis, as Pillow computes them. */
function precomputeCoeffs(inSize: number, outSize: number, filter: ResampleFilter): { ksize: number; bounds: Int32Array; kk: Int32Array } {
  const f = FILTERS[filter];
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = f.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const v = f.fn((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < ksize; x++) {
      let v = x < xmax ? w[x]! : 0;
      if (x < xmax && ww !== 0) v /= ww;
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss: number): number {
  const v = Math.floor(ss / (1 << PRECISION_BITS));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Resizes like PIL's `Image.resize((w, h), resample)` on an RGB image. */
/**
 * One output pixel of a resampling pass (Pillow's ImagingResampleHorizontal/Vertical
 * inner loop): the fixed-point sum over `n` source pixels, the i-th at src[p0 + i *
 * step], weighted by kk[k + i], rounded and clipped into dst[d..d+2].
 */
function resamplePixel(src: Uint8Array, p0: number, step: number, kk: Int32Array, k: number, n: number, dst: Uint8Array, d: number): void {
  let s0 = 1 << (PRECISION_BITS - 1);
  let s1 = s0;
  let s2 = s0;
  for (let i = 0, p = p0; i < n; i++, p += step) {
    const kv = kk[k + i]!;
    s0 += src[p]! * kv;
    s1 += src[p + 1]! * kv;
    s2 += src[p + 2]! * kv;
  }
  dst[d] = clip8(s0);
  dst[d + 1] = clip8(s1);
  dst[d + 2] = clip8(s2);
}

export function resize(img: RgbImage, outW: number, outH: number, filter: ResampleFilter = 'bicubic'): RgbImage {
  checkImage(img);
  if (!Number.isInteger(outW) || !Number.isInteger(outH) || outW < 1 || outH < 1) throw new RangeError(`cannot resize to ${outW}x${outH}`);
  if (outW === img.width && outH === img.height) return { width: outW, height: outH, data: img.data.slice() };
  const horiz = precomputeCoeffs(img.width, outW, filter);
  const vert = precomputeCoeffs(img.height, outH, filter);
  let cur = img;
  let rowOffset = 0; // first source row the vertical pass reads, relative to cur
  if (outW !== img.width) {
    // Horizontal pass over only the rows the vertical pass will read.
    const yFirst = vert.bounds[0]!;
    const yLast = vert.bounds[outH * 2 - 2]! + vert.bounds[outH * 2 - 1]!;
    const rows = outH !== img.height ? yLast - yFirst : img.height;
    const y0 = outH !== img.height ? yFirst : 0;
    const tmp = createImage(outW, rows);
    const { ksize, bounds, kk } = horiz;
    for (let y = 0; y < rows; y++) {
      const srow = (y + y0) * img.width * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2]!;
        const xmax = bounds[xx * 2 + 1]!;
        const k = xx * ksize;
        resamplePixel(img.data, srow + xmin * 3, 3, kk, k, xmax, tmp.data, (y * outW + xx) * 3);
      }
    }
    cur = tmp;
    rowOffset = y0;
  }
  if (outH === img.height) return cur;
  const out = createImage(outW, outH);
  const { ksize, bounds, kk } = vert;
  const W = cur.width;
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2]! - rowOffset;
    const ymax = bounds[yy * 2 + 1]!;
    const k = yy * ksize;
    for (let xx = 0; xx < W; xx++) {
      resamplePixel(cur.data, (ymin * W + xx) * 3, W * 3, kk, k, ymax, out.data, (yy * W + xx) * 3);
    }
  }
  return out;
}

/** Python's round() on a float: halves go to the even neighbour. */
export function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * ADM's center_crop_arr (guided-diffusion, used by RAR's pretokenization): while the
 * short side is at least 2*size, halve both sides (floor) with a box filter; then
 * bicubic-resize so the short side is `size` (Python rounding of the long side);
 * then take the centred size x size crop.
 */
export function centerCropArr(img: RgbImage, size: number): RgbImage {
  checkImage(img);
  let cur = img;
  while (Math.min(cur.width, cur.height) >= 2 * size) {
    cur = resize(cur, Math.floor(cur.width / 2), Math.floor(cur.height / 2), 'box');
  }
  const scale = size / Math.min(cur.width, cur.height);
  cur = resize(cur, roundHalfEven(cur.width * scale), roundHalfEven(cur.height * scale), 'bicubic');
  const y0 = Math.floor((cur.height - size) / 2);
  const x0 = Math.floor((cur.width - size) / 2);
  return crop(cur, x0, y0, size, size);
}

/** A crop box: top-left corner (x, y) of a size x size square. */
export interface CropBox {
  x: number;
  y: number;
}

/**
 * torchvision's five_crop boxes of a size x size crop in a width x height image, in its
 * order: top-left, top-right, bottom-left, bottom-right, centre. The centre is
 * torchvision's center_crop: int(round((W - size) / 2)) with Python's round (half to
 * even: 12.5 -> 12).
 */
export function fiveCropBoxes(width: number, height: number, size: number): CropBox[] {
  if (!Number.isInteger(size) || size < 1 || size > width || size > height)
    throw new RangeError(`five crop: a ${size}x${size} crop does not fit the ${width}x${height} image`);
  const dx = width - size;
  const dy = height - size;
  return [
    { x: 0, y: 0 },
    { x: dx, y: 0 },
    { x: 0, y: dy },
    { x: dx, y: dy },
    { x: roundHalfEven(dx / 2), y: roundHalfEven(dy / 2) },
  ];
}

/**
 * torchvision's TenCrop(size) (vertical_flip=False): the five crops of the image, then the
 * five crops of its horizontal flip (boxes taken in the flipped image).
 */
export function tenCrop(img: RgbImage, size: number): RgbImage[] {
  checkImage(img);
  const boxes = fiveCropBoxes(img.width, img.height, size);
  const flipped = flipHorizontal(img);
  return [img, flipped].flatMap((im) => boxes.map((b) => crop(im, b.x, b.y, size, size)));
}

/**
 * The official pretokenization's `--ten_crop` (scripts/pretokenization.py, LlamaGen's
 * augmentation): centerCropArr to int(1.1 * size), then TenCrop(size). Ten images.
 */
export function tenCropArr(img: RgbImage, size: number): RgbImage[] {
  return tenCrop(centerCropArr(img, Math.trunc(size * 1.1)), size);
}

// ---------------------------------------------------------------------------------
// Files

// JPEG: decoded as the official pretokenization decodes it, i.e. PIL's
// Image.open(f).convert('RGB') (torchvision's pil_loader). sharp runs libjpeg-turbo with
// the same settings as PIL (ISLOW IDCT, fancy upsampling, full size: no shrink-on-load
// since nothing is resized there), so YCbCr and greyscale pixels come out identical.
// The differences sharp would add by default are switched off or undone here:
//   - ICC profiles: sharp converts to sRGB through an embedded profile; PIL converts
//     nothing (ignoreIcc).
//   - EXIF orientation: PIL's open applies none, nor does sharp unless asked (autoOrient).
//   - CMYK / YCCK: sharp converts through a CMYK ICC profile. Instead we take the CMYK
//     channels raw (libvips inverts them, like PIL's "CMYK;I": Adobe/Photoshop store ink
//     inverted) and apply PIL's cmyk2rgb formula below.
//   - Greyscale: taken as one band and replicated, as PIL's L -> RGB.
//   - Warnings: PIL decodes through libjpeg warnings ("extraneous bytes before marker")
//     and refuses truncated files ("image file is truncated"); failOn: 'truncated'.
// test/api/jpeg.test.ts checks all of these against Pillow-decoded references.

type Sharp = typeof SharpModule;
let sharpLoading: Promise<Sharp> | undefined;

/** sharp, imported on the first JPEG so that everything else works without it. */
function loadSharp(): Promise<Sharp> {
  sharpLoading ??= import('sharp')
    .then((m) => {
      const f = (m as { default?: Sharp }).default ?? (m as unknown as Sharp);
      if (typeof f !== 'function') throw new Error('the module has no sharp() function');
      return f;
    })
    .catch((e: unknown) => {
      sharpLoading = undefined;
      throw new ImageDecodeError(
        `reading JPEG files needs the 'sharp' package (prebuilt libvips, installed with rargen), which could not be loaded: ` +
          `${(e as Error)?.message ?? String(e)}. Install it for this platform with \`npm install sharp\` ` +
          `(see https://sharp.pixelplumbing.com/install; PNG files need nothing)`,
      );
    });
  return sharpLoading;
}

/** The first SOFn frame header's size and number of components, or undefined if none is found before SOS. */
function jpegFrame(b: Uint8Array): { components: number; width: number; height: number } | undefined {
  let p = 2;
  while (p + 4 <= b.length) {
    if (b[p] !== 0xff) return undefined;
    const m = b[p + 1]!;
    if (m === 0xff) {
      p++; // fill byte
      continue;
    }
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
      p += 2; // no length field
      continue;
    }
    if (m === 0xda || m === 0xd9) return undefined;
    const len = (b[p + 2]! << 8) | b[p + 3]!;
    // SOF0..SOF15 except DHT (c4), JPG (c8) and DAC (cc).
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      if (p + 9 >= b.length) return undefined;
      return { height: (b[p + 5]! << 8) | b[p + 6]!, width: (b[p + 7]! << 8) | b[p + 8]!, components: b[p + 9]! };
    }
    p += 2 + len;
  }
  return undefined;
}

/** Pillow's cmyk2rgb (libImaging/Convert.c) on PIL-convention CMYK (0 = no ink). */
function cmykToRgb(cmyk: Uint8Array, out: Uint8Array): void {
  for (let i = 0, o = 0; i < cmyk.length; i += 4, o += 3) {
    const nk = 255 - cmyk[i + 3]!;
    for (let c = 0; c < 3; c++) {
      const t = cmyk[i + c]! * nk + 128; // MULDIV255: round(a * b / 255)
      out[o + c] = nk - (((t >> 8) + t) >> 8);
    }
  }
}

/** Decodes JPEG bytes to RGB exactly as PIL's Image.open(f).convert('RGB') does. */
export async function decodeJpeg(buf: Uint8Array, name = 'image'): Promise<RgbImage> {
  let sharp: Sharp;
  try {
    sharp = await loadSharp();
  } catch (e) {
    throw new ImageDecodeError(`${name}: ${(e as Error).message}`);
  }
  const frame = jpegFrame(buf);
  const components = frame?.components;
  // The pixel cap (lib/io/limits.ts; by default PIL's DecompressionBombError threshold,
  // 2 * Image.MAX_IMAGE_PIXELS) is checked from the frame header before sharp allocates
  // anything; limitInputPixels is the same cap for files whose header we cannot parse.
  if (frame) {
    try {
      checkImageSize(frame.width, frame.height, 'JPEG');
    } catch (e) {
      throw new ImageDecodeError(`${name}: ${(e as Error).message}`);
    }
  }
  let raw: { data: Buffer; info: { width: number; height: number; channels: number } };
  try {
    let s = sharp(buf, { ignoreIcc: true, autoOrient: false, failOn: 'truncated', sequentialRead: true, limitInputPixels: limit('imagePixels') });
    if (components === 4) s = s.pipelineColourspace('cmyk').toColourspace('cmyk');
    else if (components === 1) s = s.toColourspace('b-w');
    raw = await s.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new ImageDecodeError(`${name}: cannot decode JPEG (${(e as Error).message})`);
  }
  const { width, height, channels } = raw.info;
  const data = new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
  if (channels === 3 && data.length === width * height * 3) return { width, height, data };
  const img = createImage(width, height);
  if (channels === 4 && components === 4 && data.length === width * height * 4) cmykToRgb(data, img.data);
  else if (channels === 1 && data.length === width * height) {
    for (let i = 0; i < data.length; i++) img.data[i * 3] = img.data[i * 3 + 1] = img.data[i * 3 + 2] = data[i]!;
  } else throw new ImageDecodeError(`${name}: unsupported JPEG layout (${components ?? '?'} components decoded to ${channels} channels)`);
  return img;
}

/** Decodes PNG or JPEG bytes (sniffed from the content) to RGB, as PIL's convert('RGB') does. */
export async function decodeImage(buf: Uint8Array, name = 'image'): Promise<RgbImage> {
  if (buf.length >= 8 && PNG_SIGNATURE.every((v, i) => buf[i] === v)) return decodePng(buf);
  if (buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff) return decodeJpeg(buf, name);
  throw new ImageDecodeError(`${name}: not a PNG or JPEG file`);
}

export async function loadImage(path: string): Promise<RgbImage> {
  const buf = await readFile(path);
  try {
    return await decodeImage(buf, path);
  } catch (e) {
    if (e instanceof ImageDecodeError && !e.message.startsWith(path)) throw new ImageDecodeError(`${path}: ${e.message}`);
    throw e;
  }
}

/** Writes an RGB image as PNG (creating the folder). */
export async function savePng(path: string, image: RgbImage): Promise<void> {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError(`Expected a file path for path but received ${JSON.stringify(path)}`);
  if (extname(path).toLowerCase() !== '.png') throw new TypeError(`Expected a path ending in .png for path but received ${JSON.stringify(path)}`);
  checkImage(image);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, encodePng(image));
}
