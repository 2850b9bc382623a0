// PNG/JPEG coding, Pillow-exact resizing and ADM centre cropping, the uint8
// conversion of decoder output, and grids. References in fixtures/image/ were made by
// make_image_fixtures.py with Pillow 12.3.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync, inflateSync } from 'node:zlib';
import { readNpy } from '../../lib/io/index.js';
import { tableCrc32 as crc } from '../../lib/io/crc32.js';
import {
  centerCropArr,
  createImage,
  decodeImage,
  decodePng,
  decoderOutputToImages,
  encodePng,
  flipHorizontal,
  floatToByte,
  imageGrid,
  imagesToPixels,
  loadImage,
  resize,
  roundHalfEven,
  savePng,
  type RgbImage,
} from '../../lib/image.js';

import { pattern } from './helpers.js';

const DIR = join(import.meta.dirname, 'fixtures', 'image');


function transpose(img: RgbImage): RgbImage {
  const out = createImage(img.height, img.width);
  for (let y = 0; y < img.height; y++)
    for (let x = 0; x < img.width; x++) out.data.set(img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3), (x * img.height + y) * 3);
  return out;
}

function png(name: string): RgbImage {
  return decodePng(readFileSync(join(DIR, name)));
}

async function npyImage(name: string): Promise<RgbImage> {
  const a = await readNpy(join(DIR, name));
  return { height: a.shape[0]!, width: a.shape[1]!, data: a.data as Uint8Array };
}

function maxDiff(a: RgbImage, b: RgbImage): number {
  expect([a.width, a.height]).toEqual([b.width, b.height]);
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs(a.data[i]! - b.data[i]!));
  return m;
}

describe('PNG', () => {
  it('round-trips an image through encodePng and decodePng', () => {
    const img = pattern(37, 23);
    const buf = encodePng(img);
    expect([...buf.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(buf.toString('latin1', 12, 16)).toBe('IHDR');
    expect([buf.readUInt32BE(16), buf.readUInt32BE(20), buf[24], buf[25]]).toEqual([37, 23, 8, 2]);
    const back = decodePng(buf);
    expect(back.width).toBe(37);
    expect(back.height).toBe(23);
    expect(Buffer.from(back.data).equals(Buffer.from(img.data))).toBe(true);
  });

  it('writes valid scanlines (each row: a filter byte then 3*W bytes)', () => {
    const img = pattern(5, 4);
    const buf = encodePng(img);
    const idatLen = buf.readUInt32BE(33);
    expect(buf.toString('latin1', 37, 41)).toBe('IDAT');
    const raw = inflateSync(buf.subarray(41, 41 + idatLen));
    expect(raw.length).toBe(4 * (1 + 15));
    for (let y = 0; y < 4; y++) expect(raw[y * 16]).toBeLessThanOrEqual(4);
  });

  it('saves and loads through files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rargen-png-'));
    try {
      const img = pattern(16, 9);
      await savePng(join(dir, 'a', '000000.png'), img);
      const back = await loadImage(join(dir, 'a', '000000.png'));
      expect(maxDiff(back, img)).toBe(0);
      await expect(savePng(join(dir, 'x.jpg'), img)).rejects.toThrow('Expected a path ending in .png for path but received');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reads what Pillow writes: RGB, L, P, RGBA and 16-bit RGB, as convert("RGB") gives', async () => {
    expect(maxDiff(png('small_RGBA.png'), pattern(61, 43))).toBe(0); // alpha dropped
    expect(maxDiff(png('small_L.png'), await npyImage('small_L_rgb.npy'))).toBe(0);
    expect(maxDiff(png('small_P.png'), await npyImage('small_P_rgb.npy'))).toBe(0);
    expect(maxDiff(png('small_rgb16.png'), await npyImage('small_rgb16_rgb.npy'))).toBe(0);
  });

  it('reads interlaced (Adam7) PNGs', () => {
    // Build an interlaced 8-bit RGB PNG by hand from the pattern.
    const img = pattern(11, 9);
    // The PNG specification's Adam7 pattern: the pass (1..7) of each pixel of an 8x8 tile.
    // Written in the spec's form, not as lib/png.ts's (x0, y0, dx, dy) table, so that a
    // wrong table there would fail here.
    const tile = ['16462646', '77777777', '56565656', '77777777', '36463646', '77777777', '56565656', '77777777'];
    const parts: number[] = [];
    for (let pass = 1; pass <= 7; pass++) {
      for (let y = 0; y < 9; y++) {
        const row: number[] = [];
        for (let x = 0; x < 11; x++) if (Number(tile[y % 8]![x % 8]) === pass) row.push(...img.data.subarray((y * 11 + x) * 3, (y * 11 + x) * 3 + 3));
        if (row.length) parts.push(0, ...row);
      }
    }
    const plain = encodePng(img);
    // Swap IDAT and the interlace flag of our own encoder's output.
    const ihdr = Buffer.from(plain.subarray(8, 33));
    ihdr[8 + 12] = 1;
    ihdr.writeUInt32BE(crc(ihdr.subarray(4, 21)), 21);
    const data = deflateSync(Buffer.from(parts));
    const idat = Buffer.alloc(12 + data.length);
    idat.writeUInt32BE(data.length, 0);
    idat.write('IDAT', 4, 'latin1');
    data.copy(idat, 8);
    idat.writeUInt32BE(crc(idat.subarray(4, 8 + data.length)), 8 + data.length);
    const iend = plain.subarray(plain.length - 12);
    const file = Buffer.concat([plain.subarray(0, 8), ihdr, idat, iend]);
    expect(maxDiff(decodePng(file), img)).toBe(0);
  });

  it('rejects corrupt files with a clear message', () => {
    const buf = Buffer.from(encodePng(pattern(4, 4)));
    buf[45] ^= 0xff; // inside the IDAT chunk's data
    expect(() => decodePng(buf)).toThrow(/PNG chunk IDAT has a bad CRC|corrupt/);
  });

  it('rejects a file that is neither PNG nor JPEG', async () => {
    await expect(decodeImage(Buffer.from('GIF89a....'), 'x.gif')).rejects.toThrow('x.gif: not a PNG or JPEG file');
  });
});

describe('JPEG', () => {
  // The full set (every subsampling, progressive, grey, CMYK, Pillow 9.4) is in jpeg.test.ts.
  it('decodes JPEGs to the pixels Pillow 12.3 / libjpeg-turbo 3 gives', async () => {
    for (const name of ['small_q90', 'small_q90_444']) {
      const ours = await decodeImage(readFileSync(join(DIR, name + '.jpg')));
      expect(maxDiff(ours, await npyImage(name + '_rgb.npy'))).toBe(0);
    }
  });
});

describe('Pillow-exact resampling', () => {
  const small = pattern(61, 43);
  it.each([
    ['small_box_30x21.png', 30, 21, 'box'],
    ['small_bicubic_29x17.png', 29, 17, 'bicubic'],
    ['small_bicubic_80x57.png', 80, 57, 'bicubic'],
    ['small_bilinear_40x30.png', 40, 30, 'bilinear'],
    ['small_bicubic_61x20.png', 61, 20, 'bicubic'],
    ['small_bicubic_33x43.png', 33, 43, 'bicubic'],
  ] as const)('%s equals PIL resize bit for bit', (file, w, h, filter) => {
    expect(maxDiff(resize(small, w, h, filter), png(file))).toBe(0);
  });

  it('center-crops like ADM center_crop_arr (box halving, bicubic, crop)', () => {
    expect(maxDiff(centerCropArr(small, 16), png('small_crop16.png'))).toBe(0);
    const big = pattern(150, 97);
    expect(maxDiff(centerCropArr(big, 20), png('big_crop20.png'))).toBe(0);
    expect(maxDiff(centerCropArr(transpose(big), 20), png('bigT_crop20.png'))).toBe(0);
  });

  it('rounds like Python', () => {
    expect([0.5, 1.5, 2.5, 2.4999, 2.5001, 22.857142857142858, -1.5].map(roundHalfEven)).toEqual([0, 2, 2, 2, 3, 23, -2]);
  });
});

describe('float -> uint8', () => {
  it('clamps to [0,1], multiplies by 255 and truncates (never rounds)', () => {
    expect([0, 0.5, 0.999, 0.99999, 1, 1.5, -0.2, NaN, 1 / 255, 0.00392, 254.9 / 255].map(floatToByte)).toEqual([0, 127, 254, 254, 255, 255, 0, 0, 1, 0, 254]);
    for (let k = 0; k <= 255; k++) expect(floatToByte(Math.fround(k / 255))).toBe(k);
  });

  it('turns NCHW decoder output into HWC images', () => {
    const B = 2;
    const R = 3;
    const out = new Float32Array(B * 3 * R * R);
    for (let b = 0; b < B; b++)
      for (let c = 0; c < 3; c++) for (let i = 0; i < R * R; i++) out[((b * 3 + c) * R * R) + i] = Math.fround((b * 100 + c * 30 + i + 0.9) / 255);
    const imgs = decoderOutputToImages(out, B, R);
    expect(imgs).toHaveLength(2);
    expect([imgs[1]!.width, imgs[1]!.height]).toEqual([3, 3]);
    // pixel i of image b: (b*100 + c*30 + i + 0.9) truncated
    expect([...imgs[1]!.data.subarray(4 * 3, 5 * 3)]).toEqual([104, 134, 164]);
    expect([...imgs[0]!.data.subarray(0, 3)]).toEqual([0, 30, 60]);
    expect(() => decoderOutputToImages(out, 3, R)).toThrow('decoder output has 54 values, expected 3 x 3 x 3 x 3');
  });

  it('turns images into NCHW pixels in [0,1] (v / 255)', () => {
    const img = pattern(2, 2);
    const px = imagesToPixels([img, flipHorizontal(img)]);
    expect(px).toHaveLength(2 * 3 * 4);
    expect(px[1]).toBe(Math.fround(img.data[3]! / 255)); // image 0, channel 0, pixel 1
    expect(px[4]).toBe(Math.fround(img.data[1]! / 255)); // image 0, channel 1, pixel 0
    expect(px[12]).toBe(Math.fround(img.data[3]! / 255)); // flipped: pixel 0 is old pixel 1
  });
});

describe('imageGrid', () => {
  it('tiles left to right, top to bottom, padding with background', () => {
    const mk = (v: number) => {
      const i = createImage(2, 2);
      i.data.fill(v);
      return i;
    };
    const g = imageGrid([mk(10), mk(20), mk(30)], 2);
    expect([g.width, g.height]).toEqual([4, 4]);
    const at = (x: number, y: number) => g.data[(y * g.width + x) * 3];
    expect([at(0, 0), at(2, 0), at(0, 2), at(2, 2), at(3, 3)]).toEqual([10, 20, 30, 0, 0]);
    const p = imageGrid([mk(10), mk(20)], 5, { padding: 1, background: [255, 255, 255] });
    expect([p.width, p.height]).toEqual([7, 4]);
    expect(p.data[0]).toBe(255);
    expect(p.data[(1 * 7 + 1) * 3]).toBe(10);
    expect(p.data[(1 * 7 + 4) * 3]).toBe(20);
    expect(() => imageGrid([mk(1), createImage(3, 2)], 2)).toThrow('images[1] is 3x2 but images[0] is 2x2');
    expect(() => imageGrid([mk(1)], 0)).toThrow('Expected integer >= 1 for cols but received 0');
  });
});

