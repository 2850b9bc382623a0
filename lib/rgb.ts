// The host image type (8-bit RGB, HWC) and the checks every image function shares: the
// shape check, the decoded-size cap, and the decode error. Split out of lib/image.ts so
// that the PNG codec (lib/png.ts) and the rest of lib/image.ts both build on it.
import { limit, overLimit } from './io/limits.js';

/** An 8-bit RGB image, rows top to bottom, pixels left to right, 3 bytes each (HWC). */
export interface RgbImage {
  width: number;
  height: number;
  /** Length width * height * 3. */
  data: Uint8Array;
}

export function createImage(width: number, height: number): RgbImage {
  return { width, height, data: new Uint8Array(width * height * 3) };
}

export function checkImage(img: RgbImage, what = 'image'): void {
  if (
    !img ||
    !Number.isInteger(img.width) ||
    !Number.isInteger(img.height) ||
    img.width < 1 ||
    img.height < 1 ||
    !(img.data instanceof Uint8Array) ||
    img.data.length !== img.width * img.height * 3
  ) {
    throw new TypeError(`Expected an RGB image {width, height, data: Uint8Array(width*height*3)} for ${what}`);
  }
}

/** An image file that cannot be decoded (bad bytes, unsupported layout, over the size cap). */
export class ImageDecodeError extends Error {
  override name = 'ImageDecodeError';
  readonly code = 'RARGEN_IMAGE_DECODE';
}

/**
 * Refuses an image whose declared size exceeds the pixel cap (lib/io/limits.ts,
 * RARGEN_MAX_IMAGE_PIXELS; Pillow's decompression-bomb threshold by default), before
 * anything of that size is allocated. Decoders call it with the header's size.
 */
export function checkImageSize(width: number, height: number, format: string): void {
  if (width * height > limit('imagePixels')) {
    throw new ImageDecodeError(`${format} declares ${width}x${height} = ${width * height} pixels, ${overLimit('imagePixels')}`);
  }
}
