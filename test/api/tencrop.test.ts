// The official pretokenization's --ten_crop (scripts/pretokenization.py): ADM centre crop
// to int(1.1 * size), then torchvision TenCrop(size). Checked against torchvision itself
// (fixtures/image/make_tencrop_fixtures.py): pixels for size 32, the boxes for 256.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readNpy } from '../../lib/io/index.js';
import { centerCropArr, createImage, crop, fiveCropBoxes, flipHorizontal, tenCrop, tenCropArr, type RgbImage } from '../../lib/image.js';

import { pattern } from './helpers.js';

const DIR = join(import.meta.dirname, 'fixtures', 'image');


/** Pixel (x, y) holds (x & 255, y & 255, (x >> 8) | (y >> 8) << 4), as make_tencrop_fixtures.py. */
function coded(S: number): RgbImage {
  const img = createImage(S, S);
  for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) img.data.set([x & 255, y & 255, (x >> 8) | ((y >> 8) << 4)], (y * S + x) * 3);
  return img;
}

function source(img: RgbImage, x: number, y: number): [number, number] {
  const i = (y * img.width + x) * 3;
  return [img.data[i]! | ((img.data[i + 2]! & 15) << 8), img.data[i + 1]! | ((img.data[i + 2]! >> 4) << 8)];
}

describe('ten crop (the official --ten_crop)', () => {
  it('five_crop boxes: corners, then the centre with Python rounding (half to even)', () => {
    // 256 from int(1.1 * 256) = 281: centre (12.5 -> 12, 12.5 -> 12).
    expect(fiveCropBoxes(281, 281, 256)).toEqual([
      { x: 0, y: 0 },
      { x: 25, y: 0 },
      { x: 0, y: 25 },
      { x: 25, y: 25 },
      { x: 12, y: 12 },
    ]);
    // 32 from int(1.1 * 32) = 35: 1.5 -> 2; and a non-square image.
    expect(fiveCropBoxes(35, 35, 32)[4]).toEqual({ x: 2, y: 2 });
    expect(fiveCropBoxes(300, 281, 256)).toEqual([
      { x: 0, y: 0 },
      { x: 44, y: 0 },
      { x: 0, y: 25 },
      { x: 44, y: 25 },
      { x: 22, y: 12 },
    ]);
    expect(() => fiveCropBoxes(255, 300, 256)).toThrow(/256x256 crop does not fit the 255x300 image/);
  });

  it("size 256: torchvision TenCrop's boxes and order, flips included (tencrop_boxes_281.json)", () => {
    const want: { top_left: [number, number]; top_right: [number, number] }[] = JSON.parse(readFileSync(join(DIR, 'tencrop_boxes_281.json'), 'utf8'));
    const crops = tenCrop(coded(281), 256);
    expect(crops).toHaveLength(10);
    expect(crops.map((c) => ({ top_left: source(c, 0, 0), top_right: source(c, 255, 0) }))).toEqual(want);
    // crops 5..9 are the five boxes of the flipped image, which are not the flips of crops 0..4
    // where the centre rounds (x 12 in the flip is x 13..268 of the original).
    expect(source(crops[9]!, 255, 0)).toEqual([13, 12]);
    expect(Buffer.from(crops[5]!.data).equals(Buffer.from(flipHorizontal(crops[1]!).data))).toBe(true);
  });

  it('size 32: the ten crops of ADM crop to 35 + TenCrop(32) equal torchvision bit for bit (tencrop_big_32.npy)', async () => {
    const ref = await readNpy(join(DIR, 'tencrop_big_32.npy'));
    expect(ref.shape).toEqual([10, 32, 32, 3]);
    const crops = tenCropArr(pattern(150, 97), 32);
    expect(crops).toHaveLength(10);
    const data = ref.data as Uint8Array;
    crops.forEach((c, i) => {
      expect([c.width, c.height]).toEqual([32, 32]);
      expect(Buffer.from(c.data).equals(Buffer.from(data.subarray(i * 3072, (i + 1) * 3072))), `crop ${i}`).toBe(true);
    });
    // It is the ADM crop to int(1.1 * 32) = 35, then the boxes.
    const big = centerCropArr(pattern(150, 97), 35);
    expect(Buffer.from(crops[4]!.data).equals(Buffer.from(crop(big, 2, 2, 32, 32).data))).toBe(true);
  });
});
