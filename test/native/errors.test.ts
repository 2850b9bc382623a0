// Bad inputs give errors naming the thing: class ids, token ids, weight keys and
// shapes, missing weights, devices, freed and busy models.
import { describe, expect, it } from 'vitest';
import { addon, loadRarTiny, rarTinyConfig, vqTinyConfig } from './helpers.js';

const cfg = rarTinyConfig();
const N = cfg.seqLen, V = cfg.codebookSize, K = cfg.numClasses;

const gen = (classIds: number[]) => ({
  classIds: Int32Array.from(classIds),
  guidanceScale: 2,
  guidanceScalePow: 1,
  temperature: 1,
  topK: 0,
  topP: 1,
  greedy: false,
  seed: '1',
  indexOffset: 0,
});

describe('native argument errors', () => {
  it('class id out of range names the index and value', async () => {
    const m = await loadRarTiny();
    try {
      expect(() => addon.rarGenerate(m, gen([0, 3, K]))).toThrow(`between 0 and ${K - 1} (class ids) for classIds[2] but received ${K}`);
      expect(() => addon.rarGenerate(m, gen([-1]))).toThrow('classIds[0] but received -1');
      const ids = new Int32Array(N);
      ids[5] = V;
      expect(() => addon.rarDecodeSteps(m, ids, Int32Array.from([V + 1]))).toThrow(`ids[5] but received ${V}`);
      expect(() => addon.rarDecodeSteps(m, new Int32Array(N), Int32Array.from([3]))).toThrow('condition[0] but received 3');
      const orders = new Int32Array(N).map((_, i) => i);
      orders[3] = 2;
      expect(() => addon.rarForward(m, new Int32Array(N), Int32Array.from([V + 1]), orders)).toThrow(
        'orders[0] is not a permutation',
      );
      expect(() => addon.rarGenerate(m, { ...gen([1]), temperature: 0 })).toThrow('temperature must be > 0');
      expect(() => addon.rarGenerate(m, { ...gen([1]), seed: 'abc' })).toThrow('seed must be a decimal string');
    } finally {
      addon.free(m);
    }
  });

  it('wrong weight shape, unknown key and missing keys', () => {
    const m = addon.createRar(cfg, 'cpu', 'f32');
    try {
      expect(() => addon.setWeight(m, 'blocks.0.attn.qkv.weight', new Float32Array(64 * 64), [64, 64])).toThrow(
        "weight 'blocks.0.attn.qkv.weight': expected shape (192, 64), found (64, 64)",
      );
      expect(() => addon.setWeight(m, 'blocks.9.attn.qkv.weight', new Float32Array(4), [2, 2])).toThrow(
        "unknown weight 'blocks.9.attn.qkv.weight'",
      );
      expect(() => addon.setWeight(m, 'lm_head.bias', new Float32Array(3), [V])).toThrow(`has 3 elements but shape (${V},) needs ${V}`);
      addon.setWeight(m, 'lm_head.bias', new Float32Array(V), [V]);
      expect(() => addon.finalize(m)).toThrow(/weights of this RAR generator not set: cls_token, pos_embed/);
      expect(() => addon.finalize(m)).not.toThrow(/lm_head\.bias/);
      expect(() => addon.rarForward(m, new Int32Array(N), Int32Array.from([V + 1]), new Int32Array(N).map((_, i) => i))).toThrow(
        'not finalized',
      );
    } finally {
      addon.free(m);
    }
    const vq = addon.createVq(vqTinyConfig(), 'cpu');
    try {
      expect(() => addon.finalize(vq)).toThrow(/\d+ weights of this MaskGIT-VQGAN not set: encoder\.conv_in\.weight, .*more\)/);
    } finally {
      addon.free(vq);
    }
  });

  it('bad configs, devices and dtypes', () => {
    expect(() => addon.createRar({ ...cfg, numHeads: 5 }, 'cpu', 'f32')).toThrow('hiddenSize must be divisible by numHeads');
    expect(() => addon.createRar(cfg, 'tpu', 'f32')).toThrow("unknown device 'tpu'");
    expect(() => addon.createRar(cfg, 'cpu', 'f8' as 'f32')).toThrow("weightDtype must be 'f32', 'f16' or 'bf16'");
    if (!addon.buildInfo().cuda) expect(() => addon.createRar(cfg, 'cuda:0', 'f32')).toThrow('built without CUDA');
    expect(() => addon.createVq({ ...vqTinyConfig(), channelMult: [1, 0] }, 'cpu')).toThrow('channelMult[1]');
  });

  it('use after free, busy models and wrong model kinds', async () => {
    const m = await loadRarTiny();
    const p = addon.rarGenerate(m, gen([1, 2, 3]));
    expect(() => addon.rarGenerate(m, gen([1]))).toThrow('busy with another job');
    expect(() => addon.free(m)).toThrow('rargen.free: this model is busy with another job');
    await p;
    expect(() => addon.vqDecode(m, new Int32Array(256), 1)).toThrow('rargen.vqDecode: Expected a tokenizer model (from createVq()) for model but received a generator (from createRar())');
    addon.free(m);
    addon.free(m); // idempotent
    expect(() => addon.rarGenerate(m, gen([1]))).toThrow('rargen.rarGenerate: this model was freed');
    expect(() => addon.setWeight({} as typeof m, 'x', new Float32Array(1), [1])).toThrow('rargen.setWeight: Expected a model from createRar() or createVq() for model but received an object');
  });

  it('sync and async native errors name the JS function and carry the calling line (src/napi_util.h guarded<>, Job)', async () => {
    const here = 'test/native/errors.test.ts';
    const thrown = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e as Error;
      }
      throw new Error('did not throw');
    };
    // thrown by the binding (Napi::Error) and by the model code (rargen::Error: src/model/params.cc)
    const fresh = addon.createRar(cfg, 'cpu', 'f32');
    const sync = [
      thrown(() => addon.createRar({ ...cfg, numHeads: 5 }, 'cpu', 'f32')),
      thrown(() => addon.createRar(cfg, 'cpu', 'f8' as 'f32')),
      thrown(() => addon.finalize(fresh)),
    ];
    expect(sync.map((e) => e.message)).toEqual([
      'rargen.createRar: createRar config: hiddenSize must be divisible by numHeads',
      "rargen.createRar: weightDtype must be 'f32', 'f16' or 'bf16' but received 'f8'",
      expect.stringMatching(/^rargen\.finalize: \d+ weights of this RAR generator not set: cls_token, /),
    ]);
    addon.free(fresh);
    for (const e of sync) {
      expect(e.stack!.split('\n')[0]).toBe(`${e.name}: ${e.message}`);
      expect(e.stack).toContain(here);
    }
    // rejected on the worker thread: the stack is the JS call that started the job
    const m = await loadRarTiny();
    try {
      const p = addon.rarGenerate(m, { ...gen(Array.from({ length: 32 }, (_, i) => i % K)), jobId: 4242 });
      addon.cancel(4242);
      const e = await p.then(
        () => null,
        (x: Error) => x,
      );
      expect(e).toBeInstanceOf(Error);
      expect(e!.message).toBe('rargen.rarGenerate: generation cancelled');
      expect(e!.name).toBe('AbortError');
      const lines = e!.stack!.split('\n');
      expect(lines[0]).toBe('AbortError: rargen.rarGenerate: generation cancelled');
      expect(lines.slice(1).join('\n')).toContain(here);
      expect(lines[1]).toMatch(/^ {4}at /);
    } finally {
      addon.free(m);
    }
  });
});
