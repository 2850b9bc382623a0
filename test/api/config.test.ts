// Config inference, validation and presets, on the fixtures' checkpoints and on
// synthetic tensor indexes built from the expected state dicts.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint } from '../../lib/io/index.js';
import {
  PRESETS,
  PRESET_NAMES,
  MASKGIT_VQGAN,
  detectModelKind,
  generatorLayout,
  ConfigError,
  expectedGeneratorTensors,
  expectedTokenizerTensors,
  generatorParamTable,
  toNativeRarConfig,
  toNativeVqConfig,
  tokenizerParamTable,
  inferGeneratorConfig,
  inferTokenizerConfig,
  matchPreset,
  resolvePreset,
  tokenGridSize,
  validateGeneratorWeights,
  validateTokenizerWeights,
  WeightsMismatchError,
  type GeneratorConfig,
} from '../../lib/config.js';
import { numelOf, type TensorInfo } from '../../lib/tensor.js';
import { loadGenerator, loadTokenizer } from '../../lib/generate.js';

const FIX = join(import.meta.dirname, '..', 'fixtures');

function indexOf(shapes: Map<string, number[]>): Map<string, TensorInfo> {
  const m = new Map<string, TensorInfo>();
  for (const [name, shape] of shapes) m.set(name, { name, dtype: 'float32', shape, numel: numelOf(shape) });
  return m;
}

async function tensorsOf(file: string): Promise<ReadonlyMap<string, TensorInfo>> {
  const ck = await openCheckpoint(file);
  await ck.close();
  return ck.tensors;
}

describe('parameter tables (src/model/rar_params.cc, vqgan_params.cc through the addon)', () => {
  it('RAR-B: AdamW decays cls_token, the 5 block matrices and lm_head.weight only (MODEL.md rule)', () => {
    const t = generatorParamTable(toNativeRarConfig(PRESETS['rar-b'].generator));
    const decayed = t.filter((p) => p.decayed).map((p) => p.name);
    expect(decayed.length).toBe(2 + 5 * 24);
    expect(decayed.filter((n) => !n.startsWith('blocks.') || n.startsWith('blocks.0.'))).toEqual([
      'cls_token',
      'blocks.0.attn.qkv.weight',
      'blocks.0.attn.proj.weight',
      'blocks.0.mlp.fc1.weight',
      'blocks.0.mlp.fc2.weight',
      'blocks.0.adaLN_modulation.1.weight',
      'lm_head.weight',
    ]);
    // kinds and inits: 6 GEMM weights per block + head adaLN + lm_head; LayerNorm scales start at 1
    expect(t.filter((p) => p.kind === 'linear').length).toBe(5 * 24 + 2);
    expect(t.filter((p) => p.init === 'ones').map((p) => p.name.replace(/^blocks\.\d+\./, '')).slice(0, 4)).toEqual([
      'norm1.weight',
      'attn.q_norm.weight',
      'attn.k_norm.weight',
      'norm2.weight',
    ]);
    expect(t.filter((p) => p.name.includes('adaLN_modulation')).every((p) => p.init === 'zeros')).toBe(true);
  });

  it('sizes the addon cannot take are a ConfigError naming the model', () => {
    expect(() => generatorParamTable({ ...toNativeRarConfig(PRESETS['rar-b'].generator), numHeads: 7 })).toThrow(ConfigError);
    expect(() => generatorParamTable({ ...toNativeRarConfig(PRESETS['rar-b'].generator), numHeads: 7 })).toThrow(
      'RAR generator: rarParamTable config: hiddenSize must be divisible by numHeads',
    );
    expect(() => tokenizerParamTable({ ...toNativeVqConfig(MASKGIT_VQGAN), channelMult: [] })).toThrow(
      /^MaskGIT-VQGAN tokenizer: vqParamTable config: channelMult must be a non-empty array/,
    );
  });

  it('the VQGAN middles follow numResBlocks (3 here), like the levels', () => {
    const t = tokenizerParamTable({ ...toNativeVqConfig(MASKGIT_VQGAN), numResBlocks: 3 }).map((p) => p.name);
    for (const part of ['encoder.mid', 'decoder.mid', 'encoder.down.0.block', 'decoder.up.4.block'])
      expect(new Set(t.filter((n) => n.startsWith(part + '.')).map((n) => n.split('.')[part.split('.').length])).size, part).toBe(3);
  });
});

describe('inferGeneratorConfig', () => {
  it('reads every size of rar-tiny from its weights', async () => {
    const t = await tensorsOf(join(FIX, 'rar-tiny', 'model.bin'));
    const c = inferGeneratorConfig(t);
    expect(c).toEqual({
      hiddenSize: 64,
      depth: 2,
      numHeads: 4,
      headDim: 16,
      mlpDim: 256,
      seqLen: 16,
      codebookSize: 32,
      numClasses: 10,
      posEmbedRows: 16 + 1024,
      timestepRows: 16 + 100,
    });
    const json = JSON.parse(readFileSync(join(FIX, 'rar-tiny', 'config.json'), 'utf8'));
    expect([c.hiddenSize, c.depth, c.numHeads, c.mlpDim, c.seqLen, c.codebookSize, c.numClasses]).toEqual([
      json.hidden_size,
      json.num_hidden_layers,
      json.num_attention_heads,
      json.intermediate_size,
      json.image_seq_len,
      json.codebook_size,
      json.condition_num_classes,
    ]);
    expect(detectModelKind(t)).toBe('rar-generator');
    expect(matchPreset(c)).toBeUndefined();
    expect(() => validateGeneratorWeights(t, c)).not.toThrow();
    expect(t.size).toBe(expectedGeneratorTensors(c).size);
    expect(t.size).toBe(4 + 18 * 2 + 5);
  });

  it.each(PRESET_NAMES)('round-trips preset %s through its expected state dict', (name) => {
    const p = PRESETS[name];
    const t = indexOf(expectedGeneratorTensors(p.generator));
    const c = inferGeneratorConfig(t);
    expect(c).toEqual(p.generator);
    expect(matchPreset(c)?.name).toBe(name);
    expect(detectModelKind(t)).toBe('rar-generator');
    expect(() => validateGeneratorWeights(t, c)).not.toThrow();
  });

  it('has the sizes and sampling defaults of MODEL.md', () => {
    const rows = PRESET_NAMES.map((n) => {
      const { generator: g, sampling: s } = PRESETS[n];
      return [n, g.hiddenSize, g.depth, g.numHeads, g.headDim, g.mlpDim, s.guidanceScale, s.guidanceScalePow, s.temperature];
    });
    expect(rows).toEqual([
      ['rar-b', 768, 24, 16, 48, 3072, 16.0, 2.75, 1.0],
      ['rar-l', 1024, 24, 16, 64, 4096, 15.5, 2.5, 1.02],
      ['rar-xl', 1280, 32, 16, 80, 5120, 6.9, 1.5, 1.02],
      ['rar-xxl', 1408, 40, 16, 88, 6144, 8.0, 1.2, 1.02],
    ]);
    for (const n of PRESET_NAMES) {
      const g = PRESETS[n].generator;
      expect([g.seqLen, g.codebookSize, g.numClasses, g.posEmbedRows, g.timestepRows]).toEqual([256, 1024, 1000, 1280, 356]);
    }
  });

  it('counts the parameters the paper reports (261M, 461M, 955M, 1.5B)', () => {
    const count = (n: (typeof PRESET_NAMES)[number]) => [...expectedGeneratorTensors(PRESETS[n].generator).values()].reduce((s, sh) => s + numelOf(sh), 0);
    expect(PRESET_NAMES.map(count)).toEqual([260_923_648, 461_668_352, 955_425_024, 1_498_520_704]);
    expect(Math.abs(count('rar-b') / 1e6 - 261)).toBeLessThan(1);
    expect(Math.abs(count('rar-l') / 1e6 - 461)).toBeLessThan(1);
    expect(Math.abs(count('rar-xl') / 1e6 - 955)).toBeLessThan(1);
    expect(Math.abs(count('rar-xxl') / 1e9 - 1.5)).toBeLessThan(0.01);
    expect([...expectedTokenizerTensors(MASKGIT_VQGAN).values()].reduce((s, sh) => s + numelOf(sh), 0)).toBe(54_515_587);
  });
});

describe('inferTokenizerConfig', () => {
  it('reads vqgan-tiny as its config.json says', async () => {
    const t = await tensorsOf(join(FIX, 'vqgan-tiny', 'model.bin'));
    const json = JSON.parse(readFileSync(join(FIX, 'vqgan-tiny', 'config.json'), 'utf8'));
    const c = inferTokenizerConfig(t);
    expect(c).toEqual({
      hiddenChannels: json.hidden_channels,
      channelMult: json.channel_mult,
      numResBlocks: json.num_res_blocks,
      zChannels: json.z_channels,
      codebookSize: json.codebook_size,
      resolution: json.resolution,
    });
    expect(c).toEqual({ hiddenChannels: 32, channelMult: [1, 1, 2], numResBlocks: 2, zChannels: 32, codebookSize: 64, resolution: 64 });
    expect(tokenGridSize(c)).toBe(16);
    expect(detectModelKind(t)).toBe('maskgit-vqgan');
    expect(() => validateTokenizerWeights(t, c)).not.toThrow();
    expect(t.size).toBe(expectedTokenizerTensors(c).size);
  });

  it('round-trips the released MaskGIT-VQGAN config (decoder-only too)', () => {
    const shapes = expectedTokenizerTensors(MASKGIT_VQGAN);
    expect(inferTokenizerConfig(indexOf(shapes))).toEqual(MASKGIT_VQGAN);
    expect(tokenGridSize(MASKGIT_VQGAN)).toBe(16);
    expect(shapes.get('decoder.conv_in.weight')).toEqual([512, 256, 3, 3]);
    expect(shapes.get('quantize.embedding.weight')).toEqual([1024, 256]);
    expect(shapes.get('decoder.up.4.block.0.conv1.weight')).toEqual([512, 512, 3, 3]);
    expect(shapes.get('decoder.up.3.block.0.nin_shortcut.weight')).toEqual([256, 256, 1, 1]);
    expect(shapes.has('decoder.up.0.upsample_conv.weight')).toBe(false);
    const decoderOnly = new Map([...shapes].filter(([k]) => !k.startsWith('encoder.')));
    expect(inferTokenizerConfig(indexOf(decoderOnly))).toEqual(MASKGIT_VQGAN);
  });
});

describe('validateGeneratorWeights', () => {
  it('names the key, the expected and the found shape', () => {
    const shapes = expectedGeneratorTensors(PRESETS['rar-b'].generator);
    shapes.set('blocks.3.attn.qkv.weight', [2304, 512]);
    let err: unknown;
    try {
      validateGeneratorWeights(indexOf(shapes), PRESETS['rar-b'].generator);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(WeightsMismatchError);
    const msg = (err as Error).message;
    expect(msg).toContain('blocks.3.attn.qkv.weight: expected (2304, 768) but found (2304, 512)');
    expect(msg.split('\n')).toHaveLength(2);
    expect((err as WeightsMismatchError).wrongShapes).toEqual([{ key: 'blocks.3.attn.qkv.weight', expected: [2304, 768], found: [2304, 512] }]);
  });

  it('lists missing and unexpected keys and wrong dtypes', async () => {
    const t = new Map(await tensorsOf(join(FIX, 'rar-tiny', 'model.bin')));
    const c = inferGeneratorConfig(t);
    t.delete('blocks.1.mlp.fc2.bias');
    t.delete('lm_head.bias');
    t.set('blocks.2.norm1.weight', { name: 'blocks.2.norm1.weight', dtype: 'float32', shape: [64], numel: 64 });
    t.set('lm_head.weight', { name: 'lm_head.weight', dtype: 'int64', shape: [32, 64], numel: 2048 });
    t.set('blocks.0.attn.q_norm.bias', { name: 'blocks.0.attn.q_norm.bias', dtype: 'float32', shape: [32], numel: 32 });
    try {
      validateGeneratorWeights(t, c);
      expect.unreachable();
    } catch (e) {
      const err = e as WeightsMismatchError;
      expect(err.missing).toEqual(['blocks.1.mlp.fc2.bias', 'lm_head.bias']);
      expect(err.unexpected).toEqual(['blocks.2.norm1.weight']);
      expect(err.message).toContain('blocks.0.attn.q_norm.bias: expected (16,) but found (32,)');
      expect(err.message).toContain('lm_head.weight: expected a floating-point tensor but found int64');
      expect(err.message).toContain('missing keys (2): blocks.1.mlp.fc2.bias, lm_head.bias');
      expect(err.message).toContain('unexpected keys (1): blocks.2.norm1.weight');
      expect(err.message.split('\n')[0]).toBe('RAR generator weights do not match the expected state dict (5 problems):');
    }
  });

  it('checks the tokenizer the same way', async () => {
    const t = new Map(await tensorsOf(join(FIX, 'vqgan-tiny', 'model.bin')));
    const c = inferTokenizerConfig(t);
    t.set('decoder.up.1.upsample_conv.weight', { name: 'decoder.up.1.upsample_conv.weight', dtype: 'float32', shape: [32, 64, 3, 3], numel: 32 * 64 * 9 });
    expect(() => validateTokenizerWeights(t, c)).toThrow('decoder.up.1.upsample_conv.weight: expected (32, 32, 3, 3) but found (32, 64, 3, 3)');
  });
});

describe('presets against weights', () => {
  const rarB = PRESETS['rar-b'].generator;

  it('accepts the matching preset and rejects another, naming both', () => {
    expect(resolvePreset('rar-b', rarB)?.name).toBe('rar-b');
    expect(resolvePreset(undefined, rarB)?.name).toBe('rar-b');
    expect(() => resolvePreset('rar-l', rarB, 'rar_b.bin')).toThrow(
      'preset rar-l (hidden 1024, depth 24, heads 16, head dim 64, MLP 4096, tokens 256, codebook 1024, classes 1000) does not match rar_b.bin ' +
        '(hidden 768, depth 24, heads 16, head dim 48, MLP 3072, tokens 256, codebook 1024, classes 1000; they are rar-b): ' +
        'hiddenSize 1024 vs 768, headDim 64 vs 48, mlpDim 4096 vs 3072',
    );
  });

  it('rejects a preset for the fixture before touching the native addon', async () => {
    const file = join(FIX, 'rar-tiny', 'model.bin');
    await expect(loadGenerator(file, { preset: 'rar-xl', device: 'cpu' })).rejects.toThrow(/^preset rar-xl \(hidden 1280, .*\) does not match .*rar-tiny\/model\.bin \(hidden 64, depth 2, heads 4, head dim 16, MLP 256, tokens 16, codebook 32, classes 10\)/);
  });

  it('refuses a tokenizer as generator and the reverse', async () => {
    await expect(loadGenerator(join(FIX, 'vqgan-tiny', 'model.bin'), { device: 'cpu' })).rejects.toThrow(/holds a MaskGIT-VQGAN tokenizer, not a RAR generator/);
    await expect(loadTokenizer(join(FIX, 'rar-tiny', 'model.bin'), { device: 'cpu' })).rejects.toThrow(/holds a RAR generator, not a MaskGIT-VQGAN tokenizer/);
  });

  it('derives where each size sits from the parameter table (no key list of its own)', () => {
    const L = generatorLayout();
    const at = (s: { key: string; axis: number; rank: number }) => `${s.key}[${s.axis}/${s.rank}]`;
    expect([L.hidden, L.headDim, L.mlp, L.codebook, L.posRows, L.tsRows, L.embeddingRows].map(at)).toEqual([
      'cls_token[2/3]',
      'blocks.0.attn.q_norm.weight[0/1]',
      'blocks.0.mlp.fc1.weight[0/2]',
      'lm_head.weight[0/2]',
      'pos_embed[1/3]',
      'timesteps_embeddings[1/3]',
      'embeddings.weight[0/2]',
    ]);
    expect(L.embeddingExtra).toBe(2); // V tokens, 1 unused, K classes, 1 null (MODEL.md)
    expect(L.blockPrefix).toBe('blocks.');
    expect(L.topLevel).toEqual(generatorParamTable(toNativeRarConfig(rarB)).filter((p) => !p.name.startsWith('blocks.')).map((p) => p.name));
    expect(L.topLevel.length).toBe(9);
  });

  it('still names a generator with a top-level key missing as one (the mismatch error then lists it)', () => {
    const t = new Map(expectedGeneratorTensors(rarB));
    t.delete('lm_head.weight');
    expect(detectModelKind(indexOf(t))).toBe('rar-generator');
    expect(() => inferGeneratorConfig(indexOf(t))).toThrow('cannot infer the RAR generator config: tensor lm_head.weight is missing');
  });

  it('detects unknown checkpoints', () => {
    expect(detectModelKind(indexOf(new Map([['fc.weight', [3, 4]]])))).toBe('unknown');
  });

  it('reports inconsistent sizes when inferring', () => {
    const shapes = expectedGeneratorTensors({ ...rarB } as GeneratorConfig);
    shapes.set('blocks.0.attn.q_norm.weight', [50]);
    expect(() => inferGeneratorConfig(indexOf(shapes))).toThrow('hidden size 768 (cls_token) is not a multiple of head dim 50 (blocks.0.attn.q_norm.weight)');
    const noTs = new Map(expectedGeneratorTensors(rarB));
    noTs.delete('timesteps_embeddings');
    expect(() => inferGeneratorConfig(indexOf(noTs))).toThrow('cannot infer the RAR generator config: tensor timesteps_embeddings is missing');
  });
});
