// Aborting decode() (issue 12: the promise used to resolve with every image after the
// abort). The tokenizer's native call is not interruptible: the batch in flight runs to
// its end, its result is dropped and the promise rejects with AbortError.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decode, loadTokenizer } from '../../lib/generate.js';
import { hasModelAddon } from './helpers.js';

const TOK = join(import.meta.dirname, '..', 'fixtures', 'vqgan-tiny', 'model.bin');

describe.runIf(hasModelAddon())('decode() under an AbortSignal', () => {
  it('rejects with AbortError when aborted while a batch runs, and decodes no further batch', async () => {
    const vq = await loadTokenizer(TOK, { device: 'cpu' });
    try {
      const tokens = Array.from({ length: 6 }, (_, b) => Array.from({ length: 256 }, (_, i) => (i + b) % 64));
      const c = new AbortController();
      const t0 = performance.now();
      const p = decode(vq, tokens, { batchSize: 1, signal: c.signal });
      c.abort(new Error('user stop'));
      const e = await p.then(
        () => null,
        (x: unknown) => x as DOMException,
      );
      const aborted = performance.now() - t0;
      expect(e?.name).toBe('AbortError');
      expect((e as { cause?: Error }).cause?.message).toBe('user stop');
      // one batch at most: a full decode of 6 takes ~6x as long
      const t1 = performance.now();
      await decode(vq, tokens, { batchSize: 1 });
      const full = performance.now() - t1;
      expect(aborted).toBeLessThan(full / 2);
      // abort while the only (or last) batch runs natively: its images are dropped too
      const c2 = new AbortController();
      const p2 = decode(vq, tokens, { signal: c2.signal }); // one batch of 6
      setTimeout(() => c2.abort(), Math.min(20, full / 4));
      await expect(p2).rejects.toMatchObject({ name: 'AbortError' });
      // the tokenizer is free again afterwards
      expect((await decode(vq, tokens.slice(0, 1))).length).toBe(1);
      // an abort before the call rejects at once
      await expect(decode(vq, tokens, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    } finally {
      vq.dispose();
    }
  });
});
