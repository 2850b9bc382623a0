// MaskGIT-VQGAN on the CUDA backend against the CPU backend: the vqgan-tiny fixture
// weights and a full-size (MaskGIT, 256x256, codebook 1024 x 256) random decoder.
// Skipped, saying why, where no usable GPU is present (CI).
//
// Tolerances: the decoder output (O(1) values) within 1e-3 of the CPU's, scaled by
// max(1, max |output|) for the random full-size decoder, whose 30 conv layers in fp32
// differ only in summation order. Encoder tokens (nearest codebook row, ties to the
// lowest index) identical.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { NativeModel } from '../../lib/native.js';
import { addon, f32, FIXTURES, i32, npz, rng, vqTinyConfig } from '../native/helpers.js';
import { openCheckpoint } from '../../lib/io/index.js';
import { checkpointWeights, codebookAgreement, GPU, hasCuda, MASKGIT_VQ_UNDER_TEST, randomIds, randomVqWeights, scaledMaxDiff, vqModels } from './helpers.js';

const MASKGIT_VQ = MASKGIT_VQ_UNDER_TEST;
function randomCodebook(seed: number): Float32Array {
  for (const [name, data] of randomVqWeights(MASKGIT_VQ, seed)) if (name === 'quantize.embedding.weight') return data;
  throw new Error('no codebook');
}

describe.skipIf(!hasCuda)('CUDA vs CPU on vqgan-tiny (fixture weights)', () => {
  let cpu: NativeModel, gpu: NativeModel;
  beforeAll(async () => {
    [cpu, gpu] = await vqModels(vqTinyConfig(), ['cpu', GPU], checkpointWeights(join(FIXTURES, 'vqgan-tiny', 'model.bin')));
  });
  afterAll(() => {
    for (const m of [cpu, gpu]) if (m) addon.free(m);
  });

  it('decode (decode.npz tokens) within 1e-3 of the CPU and of PyTorch', async () => {
    const d = await npz('vqgan-tiny/decode.npz');
    const toks = i32(d.get('tokens'));
    const ref = await addon.vqDecode(cpu, toks, 2);
    const out = await addon.vqDecode(gpu, toks, 2);
    const a = scaledMaxDiff(out, ref);
    const fix = scaledMaxDiff(out, f32(d.get('unclamped')));
    console.log(`vqgan-tiny decode: cuda vs cpu ${a.err.toExponential(3)}, vs PyTorch ${fix.err.toExponential(3)}`);
    expect(a.err).toBeLessThan(1e-3);
    expect(fix.err).toBeLessThan(1e-3);
  });

  it('encode (encode.npz pixels): latents within 1e-3, tokens equal at every decisive position', async () => {
    const e = await npz('vqgan-tiny/encode.npz');
    const px = f32(e.get('pixels'));
    const ref = await addon.vqEncode(cpu, px, 2);
    const out = await addon.vqEncode(gpu, px, 2);
    const a = scaledMaxDiff(out.latents, ref.latents);
    console.log(`vqgan-tiny encode latents: cuda vs cpu ${a.err.toExponential(3)}`);
    expect(a.err).toBeLessThan(1e-3);
    const ckpt = await openCheckpoint(join(FIXTURES, 'vqgan-tiny', 'model.bin'));
    const cb = await ckpt.readFloat32('quantize.embedding.weight');
    await ckpt.close();
    const t = codebookAgreement(ref, out, cb, 2, vqTinyConfig().zChannels);
    console.log(`vqgan-tiny encode tokens: ${t.summary}`);
    expect(t.mismatches).toBe(0);
    expect([...ref.tokens]).toEqual([...i32(e.get('tokens'))]); // the CPU reference vs PyTorch
  });
});

describe.skipIf(!hasCuda)(`CUDA vs CPU on a MaskGIT-sized random decoder (256x256, channels ${MASKGIT_VQ.hiddenChannels}..${MASKGIT_VQ.hiddenChannels * 4})`, () => {
  let cpu: NativeModel, gpu: NativeModel;
  beforeAll(async () => {
    [cpu, gpu] = await vqModels(MASKGIT_VQ, ['cpu', GPU], randomVqWeights(MASKGIT_VQ, 31));
  }, 600_000);
  afterAll(() => {
    for (const m of [cpu, gpu]) if (m) addon.free(m);
  });

  it('decode of 2 images within 1e-3 (scaled)', async () => {
    const toks = randomIds(2 * 256, MASKGIT_VQ.codebookSize, 12);
    const ref = await addon.vqDecode(cpu, toks, 2);
    const out = await addon.vqDecode(gpu, toks, 2);
    const a = scaledMaxDiff(out, ref);
    console.log(`MaskGIT-sized decode: cuda vs cpu ${a.err.toExponential(3)} (max |out| ${a.scale.toFixed(2)})`);
    expect(a.err).toBeLessThan(1e-3);
  }, 600_000);

  it('encode of 1 image: latents within 1e-3, tokens equal at every decisive position (near-ties counted)', async () => {
    const r = rng(3);
    const px = new Float32Array(3 * 256 * 256).map(() => r());
    const ref = await addon.vqEncode(cpu, px, 1);
    const out = await addon.vqEncode(gpu, px, 1);
    const a = scaledMaxDiff(out.latents, ref.latents);
    console.log(`MaskGIT-sized encode latents: cuda vs cpu ${a.err.toExponential(3)}`);
    expect(a.err).toBeLessThan(1e-3);
    const t = codebookAgreement(ref, out, randomCodebook(31), 1, MASKGIT_VQ.zChannels);
    console.log(`MaskGIT-sized encode tokens: ${t.summary}`);
    expect(t.mismatches).toBe(0);
    expect(t.nearTies).toBeLessThan(t.positions / 4);
  }, 600_000);
});
