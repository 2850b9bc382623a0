// Every option of the public API is checked before anything reaches the native addon,
// with messages that name the option, the expectation and the received value. These
// tests use model objects around a dummy handle: validation must fail before the
// handle is ever used.
import { describe, expect, it } from 'vitest';
import { Generator, Tokenizer, generate, decode, encode, loadGenerator, loadTokenizer, ValidationError, describeValue } from '../../lib/generate.js';
import { NEUTRAL_SAMPLING, type GeneratorConfig, type TokenizerConfig } from '../../lib/config.js';
import { createImage } from '../../lib/image.js';
import type { NativeModel } from '../../lib/native.js';
import { rarTinyConfig, vqTinyConfig } from '../native/helpers.js';

// test/fixtures/rar-tiny and vqgan-tiny (their config.json)
const tinyGen: GeneratorConfig = { ...rarTinyConfig(), headDim: 16 };
const tinyVq: TokenizerConfig = vqTinyConfig();
const cpu = { device: 'cpu', kind: 'cpu', reason: 'CPU requested' } as const;
const dummy = {} as NativeModel;
const generator = new Generator(dummy, 'rar-tiny.bin', tinyGen, undefined, { ...NEUTRAL_SAMPLING }, cpu, 'f32');
const tokenizer = new Tokenizer(dummy, 'vqgan-tiny.bin', tinyVq, cpu);

async function genError(extra: Record<string, unknown>): Promise<string> {
  try {
    await generate({ generator, classLabels: [1, 2], ...extra } as never);
  } catch (e) {
    expect(e).toBeInstanceOf(ValidationError);
    return (e as Error).message;
  }
  throw new Error('generate() accepted invalid options');
}

describe('generate() validation', () => {
  it('names the index and value of an out-of-range class id', async () => {
    expect(await genError({ classLabels: [1, 2, 3, 10] })).toBe('Expected integer between 0 and 9 for classLabels[3] but received 10');
    expect(await genError({ classLabels: [-1] })).toBe('Expected integer between 0 and 9 for classLabels[0] but received -1');
    expect(await genError({ classLabels: [0, 2.5] })).toBe('Expected integer between 0 and 9 for classLabels[1] but received 2.5');
    expect(await genError({ classLabels: [0, '3'] })).toBe('Expected integer between 0 and 9 for classLabels[1] but received "3"');
    expect(await genError({ classLabels: Int32Array.of(4, 11) })).toBe('Expected integer between 0 and 9 for classLabels[1] but received 11');
    expect(await genError({ classLabels: [] })).toBe('Expected a non-empty array of class ids for classLabels but received an array of length 0');
    expect(await genError({ classLabels: 3 })).toBe('Expected a non-empty array of class ids for classLabels but received 3');
  });

  it('checks the sampling options', async () => {
    expect(await genError({ guidanceScale: -1 })).toBe('Expected finite number >= 0 for guidanceScale but received -1');
    expect(await genError({ guidanceScale: NaN })).toBe('Expected finite number >= 0 for guidanceScale but received NaN');
    expect(await genError({ guidanceScale: Infinity })).toBe('Expected finite number >= 0 for guidanceScale but received Infinity');
    expect(await genError({ guidanceScalePow: '2' })).toBe('Expected finite number >= 0 for guidanceScalePow but received "2"');
    expect(await genError({ temperature: 0 })).toBe('Expected finite number > 0 for temperature but received 0');
    expect(await genError({ temperature: -0.5 })).toBe('Expected finite number > 0 for temperature but received -0.5');
    expect(await genError({ topK: -1 })).toBe('Expected integer >= 0 for topK but received -1');
    expect(await genError({ topK: 1.5 })).toBe('Expected integer >= 0 for topK but received 1.5');
    expect(await genError({ topP: 0 })).toBe('Expected number greater than 0 and at most 1 for topP but received 0');
    expect(await genError({ topP: 1.01 })).toBe('Expected number greater than 0 and at most 1 for topP but received 1.01');
    expect(await genError({ greedy: 1 })).toBe('Expected boolean for greedy but received 1');
    expect(await genError({ batchSize: 0 })).toBe('Expected integer >= 1 for batchSize but received 0');
    expect(await genError({ batchSize: 2.5 })).toBe('Expected integer >= 1 for batchSize but received 2.5');
  });

  it('checks indexOffset', async () => {
    expect(await genError({ indexOffset: -1 })).toBe('Expected integer >= 0 for indexOffset but received -1');
    expect(await genError({ indexOffset: 1.5 })).toBe('Expected integer >= 0 for indexOffset but received 1.5');
    expect(await genError({ indexOffset: '2' })).toBe('Expected integer >= 0 for indexOffset but received "2"');
    expect(await genError({ indexOffset: 2 ** 53 })).toBe(`Expected integer >= 0 for indexOffset but received ${2 ** 53}`);
  });

  it('takes a safe integer or a 64-bit bigint seed', async () => {
    const e = 'Expected safe integer >= 0 or bigint between 0 and 2^64-1 for seed but received';
    expect(await genError({ seed: -1 })).toBe(`${e} -1`);
    expect(await genError({ seed: 1.5 })).toBe(`${e} 1.5`);
    expect(await genError({ seed: 2 ** 53 })).toBe(`${e} 9007199254740992`);
    expect(await genError({ seed: 2n ** 64n })).toBe(`${e} 18446744073709551616n`);
    expect(await genError({ seed: '42' })).toBe(`${e} "42"`);
  });

  it('checks the models, callbacks, signal and unknown options', async () => {
    expect(await genError({ generator: undefined })).toBe('Expected a Generator from loadGenerator() for generator but received undefined');
    expect(await genError({ generator: {} })).toBe('Expected a Generator from loadGenerator() for generator but received an object');
    expect(await genError({ tokenizer: generator })).toBe('Expected a Tokenizer from loadTokenizer() for tokenizer but received a Generator');
    expect(await genError({ signal: {} })).toBe('Expected an AbortSignal for signal but received an object');
    expect(await genError({ onProgress: 'yes' })).toBe('Expected a function for onProgress but received "yes"');
    expect(await genError({ guidance: 3 })).toBe('Unknown option guidance for generate()');
    await expect(generate(undefined as never)).rejects.toThrow('Expected an options object for options but received undefined');
  });

  it('refuses a tokenizer whose token count differs from the generator', async () => {
    expect(await genError({ tokenizer })).toBe('the tokenizer decodes 256 tokens per image but the generator samples 16');
  });

  it('rejects an already aborted signal with an AbortError before any native call', async () => {
    const ac = new AbortController();
    ac.abort();
    const err = await generate({ generator, classLabels: [1], signal: ac.signal }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DOMException);
    expect((err as DOMException).name).toBe('AbortError');
  });
});

describe('loadGenerator / loadTokenizer validation', () => {
  it('checks options before opening the file', async () => {
    await expect(loadGenerator('', {})).rejects.toThrow('Expected a file path string for path but received ""');
    await expect(loadGenerator('x.bin', { precision: 'f8' } as never)).rejects.toThrow('Expected one of f32, f16, bf16 for precision but received "f8"');
    await expect(loadGenerator('x.bin', { device: 'gpu' } as never)).rejects.toThrow('Expected one of auto, cpu, cuda, cuda:N for device but received "gpu"');
    await expect(loadGenerator('x.bin', { preset: 'rar-s' } as never)).rejects.toThrow('Expected one of rar-b, rar-l, rar-xl, rar-xxl for preset but received "rar-s"');
    await expect(loadGenerator('x.bin', { presets: 'rar-b' } as never)).rejects.toThrow('Unknown option presets for loadGenerator()');
    await expect(loadTokenizer('x.bin', { resolution: 0 })).rejects.toThrow('Expected integer >= 1 for resolution but received 0');
  });

  it('reports a missing file in one line', async () => {
    const err = (await loadGenerator('/nonexistent/rar_b.bin', { device: 'cpu' }).catch((e: unknown) => e)) as Error;
    expect(err.message).toContain('/nonexistent/rar_b.bin');
    expect(err.message).not.toContain('\n');
  });
});

describe('decode() / encode() validation', () => {
  it('checks token counts and ranges', async () => {
    const seq = () => new Array(256).fill(0);
    const bad = [seq(), seq()];
    bad[1]![5] = 64;
    await expect(decode(tokenizer, bad)).rejects.toThrow('Expected integer between 0 and 63 for tokens[1][5] but received 64');
    await expect(decode(tokenizer, [seq().slice(1)])).rejects.toThrow('Expected an array of 256 tokens for tokens[0] but received an array of length 255');
    await expect(decode(tokenizer, new Int32Array(300))).rejects.toThrow('Expected a flat Int32Array of a multiple of 256 tokens for tokens but received length 300');
    const flat = new Int32Array(512);
    flat[300] = -1;
    await expect(decode(tokenizer, flat)).rejects.toThrow('Expected integer between 0 and 63 for tokens[300] but received -1');
    await expect(decode(generator as never, [seq()])).rejects.toThrow('Expected a Tokenizer from loadTokenizer() for tokenizer but received a Generator');
    await expect(decode(tokenizer, [seq()], { batchSize: 0 })).rejects.toThrow('Expected integer >= 1 for batchSize but received 0');
  });

  it('checks image sizes', async () => {
    await expect(encode(tokenizer, [createImage(64, 64), createImage(32, 64)])).rejects.toThrow('Expected a 64x64 image for images[1] but received 32x64');
    await expect(encode(tokenizer, [])).rejects.toThrow('Expected a non-empty array of RGB images for images but received an array of length 0');
  });

  it('describes values', () => {
    expect([undefined, null, -0, 3n, 'ab', true, () => 1, [1, 2], new Float32Array(2), new Map()].map(describeValue)).toEqual([
      'undefined',
      'null',
      '-0',
      '3n',
      '"ab"',
      'true',
      'a function',
      'an array of length 2',
      'a Float32Array',
      'a Map',
    ]);
  });
});
