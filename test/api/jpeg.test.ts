// Decoding as the official pretokenization does: PIL's Image.open(f).convert('RGB')
// (libjpeg-turbo, ISLOW IDCT, fancy upsampling; no EXIF rotation, no colour
// management; CMYK inverted as Adobe writes it then PIL's naive CMYK -> RGB; PNG alpha
// dropped, not composited). References (X.npy next to X.jpg / X.png) were made by
// test/fixtures/jpeg/make.py with Pillow 9.4 on libjpeg-turbo 2.1.5; every test asserts
// bit equality.
import { describe, expect, it, vi } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { readNpy } from '../../lib/io/index.js';
import { decodeImage, decodePng, ImageDecodeError, loadImage, type RgbImage } from '../../lib/image.js';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'jpeg');
const file = (name: string) => readFileSync(join(DIR, name));

async function reference(name: string): Promise<RgbImage> {
  const a = await readNpy(join(DIR, name.replace(/\.(jpg|png)$/, '.npy')));
  expect(a.dtype).toBe('uint8');
  expect(a.shape).toHaveLength(3);
  expect(a.shape[2]).toBe(3);
  return { height: a.shape[0]!, width: a.shape[1]!, data: a.data as Uint8Array };
}

/** Number of bytes that differ, and the largest difference. */
function diff(a: RgbImage, b: RgbImage): { bytes: number; max: number } {
  expect([a.width, a.height]).toEqual([b.width, b.height]);
  expect(a.data.length).toBe(a.width * a.height * 3);
  let bytes = 0;
  let max = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = Math.abs(a.data[i]! - b.data[i]!);
    if (d) bytes++;
    max = Math.max(max, d);
  }
  return { bytes, max };
}

/** Inserts a marker segment (APPn) right after SOI. */
function withSegment(jpeg: Buffer, marker: number, payload: Buffer): Buffer {
  const head = Buffer.from([0xff, marker, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([jpeg.subarray(0, 2), head, payload, jpeg.subarray(2)]);
}

/** The APPn segments (marker, payload) before SOS. */
function segments(jpeg: Buffer): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  let p = 2;
  while (p + 4 <= jpeg.length && jpeg[p] === 0xff && jpeg[p + 1] !== 0xda) {
    const len = jpeg.readUInt16BE(p + 2);
    out.push([jpeg[p + 1]!, jpeg.subarray(p + 4, p + 2 + len)]);
    p += 2 + len;
  }
  return out;
}

describe('JPEG decoding equals Pillow (Image.open().convert("RGB")) bit for bit', () => {
  it.each([
    ['q90_420.jpg', 35, 27],
    ['q90_422.jpg', 35, 27],
    ['q90_444.jpg', 35, 27],
    ['q75_420_progressive.jpg', 35, 27],
    ['q95_422_progressive_optimized.jpg', 35, 27],
    ['photo_q85_420.jpg', 64, 48],
    ['grey.jpg', 35, 27],
    ['cmyk_adobe.jpg', 35, 27],
    ['cmyk_no_adobe.jpg', 35, 27],
    ['ycck.jpg', 35, 27],
    ['exif_orientation6.jpg', 35, 27],
    ['junk_before_eoi.jpg', 35, 27],
  ])('%s', async (name, w, h) => {
    const ours = await decodeImage(file(name), name);
    expect([ours.width, ours.height]).toEqual([w, h]);
    expect(diff(ours, await reference(name))).toEqual({ bytes: 0, max: 0 });
  });

  it('every fixture JPEG is covered (and each has a reference, except the broken one)', () => {
    const jpgs = readdirSync(DIR).filter((f) => f.endsWith('.jpg'));
    expect(jpgs).toHaveLength(13);
    for (const f of jpgs) expect(readdirSync(DIR).includes(f.replace('.jpg', '.npy'))).toBe(f !== 'truncated.jpg');
  });

  it('the fixtures are the hard cases: a naive decode would differ', async () => {
    // Nearest-neighbour chroma (jpeg-js, the previous decoder) differs from libjpeg's
    // fancy upsampling on 4:2:0; sharp's own CMYK -> sRGB (ICC) differs from PIL's formula.
    const jpegjs = (await import('jpeg-js')).default;
    const d = jpegjs.decode(file('q90_420.jpg'), { useTArray: true, formatAsRGBA: false });
    const ref = await reference('q90_420.jpg');
    expect(diff({ width: d.width, height: d.height, data: d.data }, ref).max).toBeGreaterThan(20);
    const icc = await sharp(file('cmyk_adobe.jpg')).raw().toBuffer({ resolveWithObject: true });
    expect(icc.info.channels).toBe(3);
    expect(diff({ width: 35, height: 27, data: icc.data }, await reference('cmyk_adobe.jpg')).max).toBeGreaterThan(50);
  });

  it('applies no EXIF rotation (PIL.Image.open applies none)', async () => {
    const name = 'exif_orientation6.jpg';
    // The orientation tag is really there: sharp's autoOrient turns it to 27x35.
    const meta = await sharp(file(name)).metadata();
    expect(meta.orientation).toBe(6);
    const img = await decodeImage(file(name));
    expect([img.width, img.height]).toEqual([35, 27]);
  });

  it('ignores an embedded ICC profile (PIL converts no colours)', async () => {
    // Splice the Display P3 profile that libvips embeds into the 4:4:4 file: the
    // compressed data is unchanged, so PIL's pixels are too.
    const p3 = await sharp(Buffer.alloc(8 * 8 * 3, 128), { raw: { width: 8, height: 8, channels: 3 } }).withIccProfile('p3').jpeg().toBuffer();
    const app2 = segments(p3).filter(([m, d]) => m === 0xe2 && d.subarray(0, 12).toString('latin1') === 'ICC_PROFILE\0');
    expect(app2).toHaveLength(1);
    const tagged = withSegment(file('q90_444.jpg'), 0xe2, app2[0]![1]);
    expect((await sharp(tagged).metadata()).hasProfile).toBe(true);
    // Colour-managed decoding would change the pixels...
    const managed = await sharp(tagged).raw().toBuffer();
    const ref = await reference('q90_444.jpg');
    expect(diff({ width: 35, height: 27, data: managed }, ref).bytes).toBeGreaterThan(1000);
    // ...ours does not.
    expect(diff(await decodeImage(tagged), ref)).toEqual({ bytes: 0, max: 0 });
  });

  it('rejects truncated and corrupt JPEGs with the file name (PIL: "image file is truncated")', async () => {
    await expect(decodeImage(file('truncated.jpg'), 'truncated.jpg')).rejects.toThrow(/^truncated\.jpg: cannot decode JPEG \(.*premature end/);
    await expect(decodeImage(file('truncated.jpg'))).rejects.toBeInstanceOf(ImageDecodeError);
    const garbage = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(40, 0x55)]);
    await expect(decodeImage(garbage, 'g.jpg')).rejects.toThrow(/^g\.jpg: cannot decode JPEG/);
    await expect(loadImage(join(DIR, 'truncated.jpg'))).rejects.toThrow(`${join(DIR, 'truncated.jpg')}: cannot decode JPEG`);
  });

  it("refuses what PIL refuses as a decompression bomb (> 2 * MAX_IMAGE_PIXELS = 178,956,970 pixels)", async () => {
    // Patch the frame header of a small file to 16000 x 11200 = 179.2M pixels: refused
    // from the header, before any pixel memory is allocated.
    const big = Buffer.from(file('q90_444.jpg'));
    const sof = big.indexOf(Buffer.from([0xff, 0xc0]));
    expect(sof).toBeGreaterThan(0);
    big.writeUInt16BE(11200, sof + 5);
    big.writeUInt16BE(16000, sof + 7);
    await expect(decodeImage(big, 'big.jpg')).rejects.toThrow(/^big\.jpg: JPEG declares 16000x11200 = 179200000 pixels.*RARGEN_MAX_IMAGE_PIXELS/);
  });

  it('rejects a non-image with a clear message', async () => {
    await expect(decodeImage(Buffer.from('GIF89a....'), 'x.gif')).rejects.toThrow('x.gif: not a PNG or JPEG file');
  });
});

describe('PNG decoding equals Pillow convert("RGB") bit for bit', () => {
  it.each([
    'png_L1.png', // mode 1 -> 0/255
    'png_L2.png', // L;2 -> x * 85
    'png_L4.png', // L;4 -> x * 17
    'png_L8_trns.png', // grey + tRNS: transparency ignored
    'png_L16.png', // PIL 9.4 opens 16-bit grey as mode I: convert clips to 0..255 (not the high byte)
    'png_LA8.png', // alpha dropped
    'png_LA16.png', // high bytes, alpha dropped
    'png_RGB16.png', // high bytes
    'png_RGBA8.png', // alpha dropped, not composited
    'png_RGBA16.png',
    'png_P4.png', // 4-bit palette
    'png_P8_trns.png', // palette + tRNS: transparency ignored
    'png_P8_short.png', // indices past a 4-entry palette
  ])('%s', async (name) => {
    const ours = decodePng(file(name));
    expect(diff(ours, await reference(name))).toEqual({ bytes: 0, max: 0 });
    expect(diff(await decodeImage(file(name)), ours)).toEqual({ bytes: 0, max: 0 });
  });

  it('every fixture PNG is covered', () => {
    expect(readdirSync(DIR).filter((f) => f.endsWith('.png'))).toHaveLength(13);
  });
});

describe('sharp is loaded lazily', () => {
  it('PNG works without sharp; a JPEG then fails naming sharp and how to install it', async () => {
    vi.resetModules();
    // What sharp's import throws where its prebuilt binary is missing (simulated).
    vi.doMock('sharp', () => ({
      get default(): never {
        throw new Error('Could not load the "sharp" module using the linux-x64 runtime');
      },
    }));
    try {
      const image = await import('../../lib/image.js');
      await import('../../lib/index.js'); // the whole API loads
      expect(diff(await image.decodeImage(file('png_RGBA8.png')), await reference('png_RGBA8.png')).bytes).toBe(0);
      const err = await image.decodeImage(file('q90_420.jpg'), 'a.jpg').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(image.ImageDecodeError);
      expect((err as Error).message).toMatch(/^a\.jpg: reading JPEG files needs the 'sharp' package/);
      expect((err as Error).message).toContain('npm install sharp');
      expect((err as Error).message).toContain('linux-x64 runtime');
    } finally {
      vi.doUnmock('sharp');
      vi.resetModules();
    }
  });
});
