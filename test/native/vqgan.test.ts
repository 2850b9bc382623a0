// MaskGIT-VQGAN (vqgan-tiny) on the CPU backend against the official PyTorch fixtures.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeModel } from '../../lib/native.js';
import { addon, f32, i32, loadVqTiny, maxAbsDiff, npz, vqTinyConfig } from './helpers.js';

let vq: NativeModel;
beforeAll(async () => {
  vq = await loadVqTiny();
});
afterAll(() => addon.free(vq));

describe('vqgan-tiny fp32 vs PyTorch fixtures', () => {
  it('decode: unclamped output within 1.1e-5 (measured 3.6e-6) (decode.npz)', async () => {
    const d = await npz('vqgan-tiny/decode.npz');
    const out = await addon.vqDecode(vq, i32(d.get('tokens')), 2);
    const ref = f32(d.get('unclamped'));
    const err = maxAbsDiff(out, ref);
    console.log(`vqgan decode (2,3,64,64): max abs err ${err.toExponential(3)}`);
    expect(err).toBeLessThan(1.1e-5);
    const clamped = out.map((v) => Math.min(1, Math.max(0, v)));
    const errImg = maxAbsDiff(clamped, f32(d.get('image')));
    console.log(`vqgan decode clamped: max abs err ${errImg.toExponential(3)}`);
    expect(errImg).toBeLessThan(1.1e-5);
  });

  it('encode: latents within 4e-5 (measured 1.3e-5) and tokens identical (encode.npz)', async () => {
    const e = await npz('vqgan-tiny/encode.npz');
    const { latents, tokens } = await addon.vqEncode(vq, f32(e.get('pixels')), 2);
    const err = maxAbsDiff(latents, f32(e.get('latents')));
    console.log(`vqgan encode latents (2,32,16,16): max abs err ${err.toExponential(3)}`);
    expect(err).toBeLessThan(4e-5);
    expect([...tokens]).toEqual([...i32(e.get('tokens'))]);
  });

  it('batch of one image equals the same image in a batch', async () => {
    const d = await npz('vqgan-tiny/decode.npz');
    const toks = i32(d.get('tokens'));
    const one = await addon.vqDecode(vq, toks.subarray(256), 1);
    const both = await addon.vqDecode(vq, toks, 2);
    expect(maxAbsDiff(one, both.subarray(3 * 64 * 64))).toBe(0);
  });

  it('rejects out-of-range tokens and wrong sizes, naming them', async () => {
    const cfg = vqTinyConfig();
    const toks = new Int32Array(256);
    toks[17] = cfg.codebookSize;
    expect(() => addon.vqDecode(vq, toks, 1)).toThrow(/tokens\[17\] but received 64/);
    expect(() => addon.vqDecode(vq, new Int32Array(255), 1)).toThrow(/tokens has 255 entries/);
    expect(() => addon.vqEncode(vq, new Float32Array(10), 1)).toThrow(/pixels has 10 entries/);
  });
});
