// MaskGIT-VQGANs with 1, 2 and 3 res blocks: maskgit_vqgan.py builds `num_res_blocks`
// blocks in every level AND in the encoder's and decoder's middles. The 1- and 3-block
// models are derived from vqgan-tiny (2 blocks) as fixtures/vqgan-blocks/gen.py derives
// them, and checked (a) against that script's outputs of the official PyTorch code and
// (b) by identities that need no fixture: a block whose conv2 is zero is the identity
// (h = conv2(...) = 0, in == out, so the output is 0 + x), so a 3-block model with an
// identity block inserted before every level's and middle's last block equals the
// 2-block model, and a 2-block model whose second blocks are identities equals the
// 1-block model.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeModel } from '../../lib/native.js';
import { openCheckpoint, saveSafetensors } from '../../lib/io/index.js';
import { ConfigError, inferTokenizerConfig, validateTokenizerWeights } from '../../lib/config.js';
import { decode, encode, loadTokenizer } from '../../lib/generate.js';
import { decoderOutputToImages, imagesToPixels } from '../../lib/image.js';
import type { TensorInfo } from '../../lib/tensor.js';
import { tempDir } from '../helpers/tmp.js';
import { addon, f32, FIXTURES, i32, maxAbsDiff, npz, vqTinyConfig } from './helpers.js';

type Weights = Map<string, { data: Float32Array; shape: number[] }>;

let base: Weights;
const models: NativeModel[] = [];
const tmp = tempDir('vqgan-blocks');

beforeAll(async () => {
  base = new Map();
  const ckpt = await openCheckpoint(join(FIXTURES, 'vqgan-tiny', 'model.bin'));
  try {
    for (const [name, info] of ckpt.tensors) base.set(name, { data: await ckpt.readFloat32(name), shape: [...info.shape] });
  } finally {
    await ckpt.close();
  }
});
afterAll(() => models.forEach((m) => addon.free(m)));

function build(w: Weights, numResBlocks: number): NativeModel {
  const m = addon.createVq({ ...vqTinyConfig(), numResBlocks }, 'cpu');
  models.push(m);
  for (const [name, t] of w) addon.setWeight(m, name, t.data, t.shape);
  addon.finalize(m);
  return m;
}

/** Copies every tensor of block `from` (`.block.j.` or `.mid.j.`) to block `to`; `conv2` scaled by `scale2`. */
function copyBlocks(w: Weights, from: number, to: number, scale2: number): void {
  for (const [k, t] of [...w]) {
    for (const [a, b] of [
      [`.block.${from}.`, `.block.${to}.`],
      [`.mid.${from}.`, `.mid.${to}.`],
    ] as const) {
      if (k.includes(a)) w.set(k.replace(a, b), { data: k.endsWith('conv2.weight') ? t.data.map((v) => v * scale2) : t.data.slice(), shape: t.shape });
    }
  }
}

function without(w: Weights, block: number): Weights {
  return new Map([...w].filter(([k]) => !k.includes(`.block.${block}.`) && !k.includes(`.mid.${block}.`)));
}

/** blocks1 of gen.py: block 1 of every level and middle dropped. */
const oneBlock = (): Weights => without(base, 1);
/** blocks3 of gen.py: block 2 = block 1 with conv2 halved. */
function threeBlocks(): Weights {
  const w = new Map(base);
  copyBlocks(w, 1, 2, 0.5);
  return w;
}

function info(w: Weights): Map<string, TensorInfo> {
  return new Map([...w].map(([k, t]) => [k, { dtype: 'float32', shape: t.shape } as TensorInfo]));
}

describe('MaskGIT-VQGAN middles have num_res_blocks blocks (1, 2, 3)', () => {
  it('the config is inferred from the weights and the state dict validates for 1, 2 and 3 blocks', () => {
    for (const [n, w] of [
      [1, oneBlock()],
      [2, base],
      [3, threeBlocks()],
    ] as const) {
      const c = inferTokenizerConfig(info(w), { resolution: 64 });
      expect(c.numResBlocks).toBe(n);
      expect(() => validateTokenizerWeights(info(w), c)).not.toThrow();
      expect([...w.keys()].filter((k) => k.startsWith('decoder.mid.')).length).toBe(6 * n);
    }
    // A middle whose count differs from the levels' is no MaskGIT-VQGAN: named.
    const bad = new Map(base);
    copyBlocks(bad, 1, 2, 1);
    for (const k of [...bad.keys()]) if (k.includes('.block.2.')) bad.delete(k);
    expect(() => inferTokenizerConfig(info(bad))).toThrow(ConfigError);
    expect(() => inferTokenizerConfig(info(bad))).toThrow(/encoder\.mid has 3 res blocks but encoder\.down\.0 has 2/);
  });

  for (const n of [1, 3]) {
    it(`${n} blocks: decode and encode equal the official code's (vqgan-blocks/blocks${n}.npz)`, async () => {
      const ref = await npz(`vqgan-blocks/blocks${n}.npz`);
      const m = build(n === 1 ? oneBlock() : threeBlocks(), n);
      const out = await addon.vqDecode(m, i32(ref.get('tokens')), 1);
      const errD = maxAbsDiff(out, f32(ref.get('unclamped')));
      const { latents, tokens } = await addon.vqEncode(m, f32(ref.get('pixels')), 1);
      const errE = maxAbsDiff(latents, f32(ref.get('latents')));
      console.log(`vqgan ${n} blocks: decode max abs err ${errD.toExponential(3)}, encode latents ${errE.toExponential(3)}`);
      // measured 2.9e-6 / 4.5e-6 (decode, 1 / 3 blocks) and 5.3e-6 / 1.1e-5 (latents): bounds about 3x
      expect(errD).toBeLessThan(1.5e-5);
      expect(errE).toBeLessThan(4e-5);
      expect([...tokens]).toEqual([...i32(ref.get('codes'))]);
      // The extra/missing blocks matter: the 2-block model is far from these outputs.
      const two = build(base, 2);
      expect(maxAbsDiff(await addon.vqDecode(two, i32(ref.get('tokens')), 1), f32(ref.get('unclamped')))).toBeGreaterThan(0.1);
    });
  }

  it('3 blocks with an identity block inserted (zero conv2) equal 2 blocks, bit for bit', async () => {
    const w = new Map(base);
    copyBlocks(w, 1, 2, 1); // block 2 = the old block 1
    copyBlocks(w, 1, 1, 0); // block 1 = identity (its norms and conv1 stay non-zero)
    const three = build(w, 3);
    const two = build(base, 2);
    const d = await npz('vqgan-tiny/decode.npz');
    const e = await npz('vqgan-tiny/encode.npz');
    const toks = i32(d.get('tokens'));
    const out3 = await addon.vqDecode(three, toks, 2);
    expect(maxAbsDiff(out3, await addon.vqDecode(two, toks, 2))).toBe(0);
    expect(maxAbsDiff(out3, f32(d.get('unclamped')))).toBeLessThan(1.5e-5);
    const px = f32(e.get('pixels'));
    const enc3 = await addon.vqEncode(three, px, 2);
    const enc2 = await addon.vqEncode(two, px, 2);
    expect(maxAbsDiff(enc3.latents, enc2.latents)).toBe(0);
    expect([...enc3.tokens]).toEqual([...i32(e.get('tokens'))]);
  });

  it('2 blocks whose second blocks are identities equal 1 block, bit for bit', async () => {
    const w = new Map(base);
    copyBlocks(w, 1, 1, 0);
    const twoId = build(w, 2);
    const one = build(oneBlock(), 1);
    const d = await npz('vqgan-tiny/decode.npz');
    const e = await npz('vqgan-tiny/encode.npz');
    const toks = i32(d.get('tokens'));
    const out1 = await addon.vqDecode(one, toks, 2);
    expect(maxAbsDiff(out1, await addon.vqDecode(twoId, toks, 2))).toBe(0);
    expect(maxAbsDiff(out1, f32(d.get('unclamped')))).toBeGreaterThan(0.1); // block 1 mattered
    const px = f32(e.get('pixels'));
    expect(maxAbsDiff((await addon.vqEncode(one, px, 2)).latents, (await addon.vqEncode(twoId, px, 2)).latents)).toBe(0);
  });

  it('loadTokenizer takes a 1-block and a 3-block checkpoint file; decode/encode equal the models checked above', async () => {
    const ref = await npz('vqgan-blocks/blocks1.npz');
    const toks = i32(ref.get('tokens'));
    for (const n of [1, 3]) {
      const file = join(tmp, `vq${n}.safetensors`);
      const w = n === 1 ? oneBlock() : threeBlocks();
      await saveSafetensors(file, new Map([...w].map(([k, t]) => [k, { dtype: 'float32' as const, shape: t.shape, data: t.data }])));
      const tok = await loadTokenizer(file, { device: 'cpu', resolution: 64 });
      try {
        expect(tok.config.numResBlocks).toBe(n);
        const m = build(w, n);
        const want = decoderOutputToImages(await addon.vqDecode(m, toks, 1), 1, 64);
        const got = await decode(tok, [toks]);
        expect(Buffer.from(got[0]!.data).equals(Buffer.from(want[0]!.data))).toBe(true);
        const codes = await encode(tok, got);
        const native = await addon.vqEncode(m, imagesToPixels(got), 1);
        expect([...codes[0]!]).toEqual([...native.tokens]);
      } finally {
        tok.dispose();
      }
    }
  });
});
