// MaskGIT-VQGAN on every available device (test/gpu/helpers.ts DEVICES: the CPU always,
// CUDA when the addon reports a usable GPU; the cuda variants are skipped, saying why,
// elsewhere): vqgan-tiny against the official PyTorch fixtures and, on the devices other
// than the CPU, against the CPU backend (the reference) with the same weights, plus a
// full-size (MaskGIT, 256x256, codebook 1024 x 256) random decoder.
//
// Tolerances: cpu: decode within 1.1e-5 of PyTorch (measured 3.6e-6), latents 4e-5
// (measured 1.3e-5), tokens identical. cuda: the decoder output (O(1) values) within 1e-3
// of the CPU's and of PyTorch's, scaled by max(1, max |output|) for the random full-size
// decoder, whose 30 conv layers in fp32 differ only in summation order; encoder tokens
// (nearest codebook row, ties to the lowest index) equal at every decisive position.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import type { NativeModel } from '../../lib/native.js';
import { openCheckpoint } from '../../lib/io/index.js';
import { addon, f32, FIXTURES, i32, maxAbsDiff, npz, rng, vqTinyConfig } from './helpers.js';
import {
  checkpointWeights, codebookAgreement, describeDevices, MASKGIT_VQ_UNDER_TEST, notTheReference, randomIds, randomVqWeights,
  scaledMaxDiff, vqModels,
} from '../gpu/helpers.js';

const tinyWeights = () => checkpointWeights(join(FIXTURES, 'vqgan-tiny', 'model.bin'));

describeDevices('vqgan-tiny fp32 vs PyTorch fixtures', (dev) => {
  const onCpu = dev.name === 'cpu';
  let vq: NativeModel, cpu: NativeModel;
  beforeAll(async () => {
    [vq, cpu = vq] = await vqModels(vqTinyConfig(), onCpu ? ['cpu'] : [dev.device, 'cpu'], tinyWeights());
  });
  afterAll(() => {
    for (const m of new Set([vq, cpu])) if (m) addon.free(m);
  });

  it(`decode: unclamped output within ${onCpu ? '1.1e-5 (measured 3.6e-6)' : '1e-3 of the CPU and of PyTorch'} (decode.npz)`, async () => {
    const d = await npz('vqgan-tiny/decode.npz');
    const toks = i32(d.get('tokens'));
    const out = await addon.vqDecode(vq, toks, 2);
    const ref = f32(d.get('unclamped'));
    const err = maxAbsDiff(out, ref);
    console.log(`${dev.name} vqgan decode (2,3,64,64): max abs err ${err.toExponential(3)}`);
    const clamped = out.map((v) => Math.min(1, Math.max(0, v)));
    const errImg = maxAbsDiff(clamped, f32(d.get('image')));
    console.log(`${dev.name} vqgan decode clamped: max abs err ${errImg.toExponential(3)}`);
    if (onCpu) {
      expect(err).toBeLessThan(1.1e-5);
      expect(errImg).toBeLessThan(1.1e-5);
    } else {
      const a = scaledMaxDiff(out, await addon.vqDecode(cpu, toks, 2));
      const fix = scaledMaxDiff(out, ref);
      console.log(`vqgan-tiny decode: ${dev.name} vs cpu ${a.err.toExponential(3)}, vs PyTorch ${fix.err.toExponential(3)}`);
      expect(a.err).toBeLessThan(1e-3);
      expect(fix.err).toBeLessThan(1e-3);
      expect(errImg).toBeLessThan(1e-3);
    }
  });

  it(`encode: latents within ${onCpu ? '4e-5 (measured 1.3e-5) and tokens identical' : '1e-3 of the CPU, tokens equal at every decisive position'} (encode.npz)`, async () => {
    const e = await npz('vqgan-tiny/encode.npz');
    const px = f32(e.get('pixels'));
    const out = await addon.vqEncode(vq, px, 2);
    const err = maxAbsDiff(out.latents, f32(e.get('latents')));
    console.log(`${dev.name} vqgan encode latents (2,32,16,16): max abs err ${err.toExponential(3)}`);
    if (onCpu) {
      expect(err).toBeLessThan(4e-5);
      expect([...out.tokens]).toEqual([...i32(e.get('tokens'))]);
      return;
    }
    const ref = await addon.vqEncode(cpu, px, 2);
    const a = scaledMaxDiff(out.latents, ref.latents);
    console.log(`vqgan-tiny encode latents: ${dev.name} vs cpu ${a.err.toExponential(3)}`);
    expect(a.err).toBeLessThan(1e-3);
    const ckpt = await openCheckpoint(join(FIXTURES, 'vqgan-tiny', 'model.bin'));
    const cb = await ckpt.readFloat32('quantize.embedding.weight');
    await ckpt.close();
    const t = codebookAgreement(ref, out, cb, 2, vqTinyConfig().zChannels);
    console.log(`vqgan-tiny encode tokens: ${t.summary}`);
    expect(t.mismatches).toBe(0);
    expect([...ref.tokens]).toEqual([...i32(e.get('tokens'))]); // the CPU reference vs PyTorch
  });

  it(`batch of one image equals the same image in a batch${onCpu ? '' : ' (within 1e-5: split-K and tile choice depend on the batch)'}`, async () => {
    const d = await npz('vqgan-tiny/decode.npz');
    const toks = i32(d.get('tokens'));
    const one = await addon.vqDecode(vq, toks.subarray(256), 1);
    const both = await addon.vqDecode(vq, toks, 2);
    expect(maxAbsDiff(one, both.subarray(3 * 64 * 64))).toBeLessThanOrEqual(onCpu ? 0 : 1e-5);
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

const MASKGIT_VQ = MASKGIT_VQ_UNDER_TEST;
function randomCodebook(seed: number): Float32Array {
  for (const [name, data] of randomVqWeights(MASKGIT_VQ, seed)) if (name === 'quantize.embedding.weight') return data;
  throw new Error('no codebook');
}

describeDevices(`a MaskGIT-sized random decoder (256x256, channels ${MASKGIT_VQ.hiddenChannels}..${MASKGIT_VQ.hiddenChannels * 4}) vs the CPU`, (dev) => {
  let cpu: NativeModel, gpu: NativeModel;
  beforeAll(async () => {
    [cpu, gpu] = await vqModels(MASKGIT_VQ, ['cpu', dev.device], randomVqWeights(MASKGIT_VQ, 31));
  }, 600_000);
  afterAll(() => {
    for (const m of [cpu, gpu]) if (m) addon.free(m);
  });

  it('decode of 2 images within 1e-3 (scaled)', async () => {
    const toks = randomIds(2 * 256, MASKGIT_VQ.codebookSize, 12);
    const ref = await addon.vqDecode(cpu, toks, 2);
    const out = await addon.vqDecode(gpu, toks, 2);
    const a = scaledMaxDiff(out, ref);
    console.log(`MaskGIT-sized decode: ${dev.name} vs cpu ${a.err.toExponential(3)} (max |out| ${a.scale.toFixed(2)})`);
    expect(a.err).toBeLessThan(1e-3);
  }, 600_000);

  it('encode of 1 image: latents within 1e-3, tokens equal at every decisive position (near-ties counted)', async () => {
    const r = rng(3);
    const px = new Float32Array(3 * 256 * 256).map(() => r());
    const ref = await addon.vqEncode(cpu, px, 1);
    const out = await addon.vqEncode(gpu, px, 1);
    const a = scaledMaxDiff(out.latents, ref.latents);
    console.log(`MaskGIT-sized encode latents: ${dev.name} vs cpu ${a.err.toExponential(3)}`);
    expect(a.err).toBeLessThan(1e-3);
    const t = codebookAgreement(ref, out, randomCodebook(31), 1, MASKGIT_VQ.zChannels);
    console.log(`MaskGIT-sized encode tokens: ${t.summary}`);
    expect(t.mismatches).toBe(0);
    expect(t.nearTies).toBeLessThan(t.positions / 4);
  }, 600_000);
}, notTheReference);
