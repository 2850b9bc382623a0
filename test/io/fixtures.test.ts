// Loads the reference checkpoints (torch 1.13 torch.save zip files) and checks every
// tensor's name, shape and values against the independent NumPy fixtures.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint, openNpz, readNpz } from '../../lib/io/index.js';
import type { NpyArray } from '../../lib/io/index.js';
import { generatorParamTable, positionRows, tokenizerParamTable } from '../../lib/config.js';

const FIX = join(import.meta.dirname, '..', 'fixtures');

describe('rar-tiny/model.bin', () => {
  it('has exactly the parameters forward.npz has gradients for, with the same shapes', async () => {
    const ck = await openCheckpoint(join(FIX, 'rar-tiny/model.bin'));
    try {
      expect(ck.format).toBe('torch-zip');
      const fwd = await readNpz(join(FIX, 'rar-tiny/forward.npz'));
      const grads = [...fwd.keys()].filter((k) => k.startsWith('grad.'));
      expect(grads.length).toBe(45);
      expect([...ck.tensors.keys()].sort()).toEqual(grads.map((k) => k.slice(5)).sort());
      for (const g of grads) {
        const info = ck.tensors.get(g.slice(5))!;
        expect(info.shape, g).toEqual(fwd.get(g)!.shape);
        expect(info.dtype).toBe('float32');
        expect(info.numel).toBe(fwd.get(g)!.data.length);
      }
      // The parameter table (src/model/rar_params.cc) for config.json's sizes is the
      // official state dict: the same names, shapes and order as torch.save wrote.
      const cfg = JSON.parse(readFileSync(join(FIX, 'rar-tiny/config.json'), 'utf8'));
      const table = generatorParamTable({
        hiddenSize: cfg.hidden_size,
        depth: cfg.num_hidden_layers,
        numHeads: cfg.num_attention_heads,
        mlpDim: cfg.intermediate_size,
        seqLen: cfg.image_seq_len,
        codebookSize: cfg.codebook_size,
        numClasses: cfg.condition_num_classes,
        ...positionRows(cfg.image_seq_len),
      });
      expect(table.map((p) => [p.name, p.shape])).toEqual([...ck.tensors].map(([k, t]) => [k, t.shape]));
    } finally {
      await ck.close();
    }
  });

  it('values: three AdamW steps (lr 1e-3) move every parameter by at most 3*lr, and some by close to it', async () => {
    const ck = await openCheckpoint(join(FIX, 'rar-tiny/model.bin'));
    const adam = await openNpz(join(FIX, 'rar-tiny/adamw.npz'));
    try {
      const names = (await adam.read('names')) as NpyArray;
      expect(names.dtype).toBe('unicode');
      expect(names.shape).toEqual([45]);
      const list = names.data as string[];
      expect(list[0]).toBe('cls_token');
      expect([...list].sort()).toEqual([...ck.tensors.keys()].sort());
      const decayed = await adam.read('decayed');
      expect(decayed.dtype).toBe('int64');
      const lr = 1e-3;
      let maxMove = 0;
      let total = 0;
      let moved = 0;
      let violations = 0;
      for (const name of list) {
        const init = await ck.readFloat32(name);
        const after = (await adam.read(`param.${name}`)).data as Float32Array;
        expect(after.length).toBe(init.length);
        for (let i = 0; i < init.length; i++) {
          const d = Math.abs(after[i]! - init[i]!);
          // Adam's step is <= lr per element (plus weight decay lr*0.03*|p|), 3 steps
          if (!(d <= 3 * lr * (1 + 0.03 * Math.abs(init[i]!)) * 1.001 + 1e-7)) violations++;
          maxMove = Math.max(maxMove, d);
          if (d > 1e-4) moved++;
          total++;
        }
      }
      expect(violations).toBe(0);
      // a loader returning wrong values (zeros, shifted, wrong dtype) would not sit within 3e-3 of every updated value
      expect(maxMove).toBeGreaterThan(2e-3);
      expect(moved / total).toBeGreaterThan(0.5);
    } finally {
      await ck.close();
      await adam.close();
    }
  });

  it('exact values: pos_embed rows are read at the right offsets (first vs last element patterns)', async () => {
    const ck = await openCheckpoint(join(FIX, 'rar-tiny/model.bin'));
    try {
      const t = await ck.read('pos_embed');
      expect(t.dtype).toBe('float32');
      const d = t.data as Float32Array;
      expect(d.length).toBe(1040 * 64);
      // weights were randomly perturbed: no zeros, all finite, sane magnitude
      let zeros = 0;
      let bad = 0;
      for (const v of d) {
        if (!Number.isFinite(v) || Math.abs(v) > 10) bad++;
        if (v === 0) zeros++;
      }
      expect(zeros).toBe(0);
      expect(bad).toBe(0);
      const f = await ck.readFloat32('pos_embed');
      expect(f).toEqual(d);
    } finally {
      await ck.close();
    }
  });
});

describe('vqgan-tiny/model.bin', () => {
  it('has the MaskGIT-VQGAN names and shapes for its config', async () => {
    const ck = await openCheckpoint(join(FIX, 'vqgan-tiny/model.bin'));
    try {
      const cfg = JSON.parse(readFileSync(join(FIX, 'vqgan-tiny/config.json'), 'utf8'));
      // The parameter table (src/model/vqgan_params.cc) for config.json's sizes is the
      // official state dict: the same names, shapes and order as torch.save wrote.
      const table = tokenizerParamTable({
        hiddenChannels: cfg.hidden_channels,
        channelMult: cfg.channel_mult,
        numResBlocks: cfg.num_res_blocks,
        zChannels: cfg.z_channels,
        codebookSize: cfg.codebook_size,
        resolution: cfg.resolution,
      });
      expect(table.map((p) => [p.name, p.shape])).toEqual([...ck.tensors].map(([k, t]) => [k, t.shape]));
      // MaskGIT quirk (MODEL.md): nin_shortcut is applied to h (cout channels), not to x
      const nin = table.filter((p) => p.name.endsWith('nin_shortcut.weight'));
      expect(nin.length).toBeGreaterThan(0);
      for (const p of nin) expect(p.shape[0], p.name).toBe(p.shape[1]);
    } finally {
      await ck.close();
    }
  });

  it('values: encode.npz tokens are the nearest codebook rows of encode.npz latents', async () => {
    const ck = await openCheckpoint(join(FIX, 'vqgan-tiny/model.bin'));
    try {
      const cb = await ck.readFloat32('quantize.embedding.weight');
      const enc = await readNpz(join(FIX, 'vqgan-tiny/encode.npz'));
      const lat = enc.get('latents')!; // (2, 32, 16, 16)
      const tok = enc.get('tokens')!.data as BigInt64Array; // (2, 256)
      const [B, Z, Hh, W] = lat.shape as [number, number, number, number];
      const l = lat.data as Float32Array;
      const V = cb.length / Z;
      for (let b = 0; b < B; b++) {
        for (let p = 0; p < Hh * W; p++) {
          let best = -1;
          let bestD = Infinity;
          for (let v = 0; v < V; v++) {
            let dsum = 0;
            for (let z = 0; z < Z; z++) {
              const diff = l[((b * Z + z) * Hh * W) + p]! - cb[v * Z + z]!;
              dsum += diff * diff;
            }
            if (dsum < bestD) {
              bestD = dsum;
              best = v;
            }
          }
          expect(best).toBe(Number(tok[b * 256 + p]));
        }
      }
    } finally {
      await ck.close();
    }
  });
});

describe('fixture npz archives', () => {
  it('read every array of every fixture npz with the dtypes and shapes numpy wrote', async () => {
    const fwd = await readNpz(join(FIX, 'rar-tiny/forward.npz'));
    expect(fwd.get('input_ids')!.dtype).toBe('int64');
    expect(fwd.get('input_ids')!.shape).toEqual([3, 16]);
    expect(fwd.get('logits')!.shape).toEqual([3, 17, 32]);
    const orders = fwd.get('orders')!.data as BigInt64Array;
    // row 0 is raster order
    for (let k = 0; k < 16; k++) expect(orders[k]).toBe(BigInt(k));
    // labels[k] = ids[orders[k]]
    const ids = fwd.get('input_ids')!.data as BigInt64Array;
    const labels = fwd.get('labels')!.data as BigInt64Array;
    for (let b = 0; b < 3; b++) for (let k = 0; k < 16; k++) expect(labels[b * 16 + k]).toBe(ids[b * 16 + Number(orders[b * 16 + k])]);
    const adam = await readNpz(join(FIX, 'rar-tiny/adamw.npz'));
    expect(adam.get('losses')!.dtype).toBe('float64');
    expect((adam.get('losses')!.data as Float64Array)[0]).toBeCloseTo(3.66791248, 7);
    const inc = await openNpz(join(FIX, 'inception/inception.npz'));
    try {
      const h = await inc.header('images256');
      expect(h.dtype).toBe('uint8');
      expect(h.shape).toEqual([3, 256, 256, 3]);
      const rows = await inc.readRows('images256', 1, 3);
      const all = await inc.read('images256');
      expect(rows.shape).toEqual([2, 256, 256, 3]);
      expect(rows.data).toEqual((all.data as Uint8Array).subarray(256 * 256 * 3));
    } finally {
      await inc.close();
    }
  });
});
