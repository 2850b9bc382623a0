// encodePngAsync (deflate on libuv's thread pool) writes the same bytes as encodePng.
import { describe, expect, it } from 'vitest';
import { createImage, decodePng, encodePng, encodePngAsync } from '../../lib/image.js';

describe('encodePngAsync', () => {
  it('equals encodePng byte for byte, encoded concurrently', async () => {
    let s = 99;
    const rnd = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const images = [
      [1, 1],
      [7, 3],
      [64, 48],
      [256, 256],
    ].flatMap(([w, h], k) =>
      [0, 1, 2].map((mode) => {
        const img = createImage(w!, h!);
        for (let i = 0; i < img.data.length; i++) img.data[i] = mode === 0 ? rnd() * 256 : mode === 1 ? ((i % 7) * 30 + rnd() * 4) & 255 : (((i / 3) | 0) % w! + k * 5) & 255;
        return img;
      }),
    );
    const asyncPngs = await Promise.all(images.map((img) => encodePngAsync(img)));
    images.forEach((img, i) => {
      expect(asyncPngs[i]!.equals(encodePng(img))).toBe(true);
      expect(decodePng(asyncPngs[i]!)).toEqual(img);
    });
    expect((await encodePngAsync(images[3]!, { level: 1 })).equals(encodePng(images[3]!, { level: 1 }))).toBe(true);
  });

  it('checks the image', async () => {
    await expect(encodePngAsync({ width: 2, height: 2, data: new Uint8Array(3) })).rejects.toThrow();
  });
});
