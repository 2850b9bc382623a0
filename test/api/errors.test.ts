// Every error class is exported with a stable code, and the preset mismatch is a
// WeightsMismatchError.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import * as rargen from '../../lib/index.js';
import { hasModelAddon } from './helpers.js';

const CODES: Record<string, string> = {
  ValidationError: 'RARGEN_INVALID_ARGUMENT',
  ClassNameError: 'RARGEN_CLASS_NAME',
  DownloadError: 'RARGEN_DOWNLOAD',
  NotDownloadedError: 'RARGEN_NOT_DOWNLOADED',
  ConfigError: 'RARGEN_CONFIG',
  WeightsMismatchError: 'RARGEN_WEIGHTS_MISMATCH',
  DeviceError: 'RARGEN_DEVICE',
  MissingWeightsError: 'RARGEN_MISSING_WEIGHTS',
  TrainConfigError: 'RARGEN_TRAIN_CONFIG',
  CheckpointError: 'RARGEN_CHECKPOINT',
  DataError: 'RARGEN_DATA',
  ImageDecodeError: 'RARGEN_IMAGE_DECODE',
  SampleLockedError: 'RARGEN_SAMPLE_LOCKED',
  SamplesIncompleteError: 'RARGEN_SAMPLES_INCOMPLETE',
  RargenIOError: 'RARGEN_IO',
  PickleTruncatedError: 'RARGEN_PICKLE_TRUNCATED',
  SessionFullError: 'RARGEN_SESSION_FULL',
};

describe('error classes', () => {
  it('are all exported, each with its code', () => {
    const exported = Object.entries(rargen).filter(([k, v]) => typeof v === 'function' && /Error$/.test(k)).map(([k]) => k).sort();
    expect(exported).toEqual(Object.keys(CODES).sort());
    for (const [name, code] of Object.entries(CODES)) {
      const C = (rargen as unknown as Record<string, new (...a: unknown[]) => Error & { code: string }>)[name]!;
      const args: unknown[] = name === 'RargenIOError' || name === 'PickleTruncatedError' ? ['f', 'm'] : name === 'WeightsMismatchError' ? ['m', [], [], [], []] : ['m'];
      const e = new C(...args);
      expect([e.name, e.code], name).toEqual([name, code]);
      expect(e).toBeInstanceOf(Error);
    }
  });

  it.runIf(hasModelAddon())('a preset that does not match the weights is a WeightsMismatchError', async () => {
    const err = await rargen.loadGenerator(join(import.meta.dirname, '..', 'fixtures', 'rar-tiny', 'model.bin'), { preset: 'rar-b', device: 'cpu' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(rargen.WeightsMismatchError);
    expect((err as rargen.WeightsMismatchError).code).toBe('RARGEN_WEIGHTS_MISMATCH');
    expect((err as Error).message).toMatch(/^preset rar-b \(hidden 768, .*\) does not match .*model\.bin/);
  });
});

describe('long work takes an AbortSignal', () => {
  it('evaluateNpz stops with an AbortError', async () => {
    const err = await rargen.evaluateNpz('ref.npz', 'sample.npz', { signal: AbortSignal.abort(), device: 'cpu' }).catch((e: unknown) => e);
    expect((err as Error).name).toBe('AbortError');
    await expect(rargen.evaluateNpz('ref.npz', 'sample.npz', { signal: 'x' as unknown as AbortSignal })).rejects.toThrow('Expected an AbortSignal for signal but received "x"');
  });
});
