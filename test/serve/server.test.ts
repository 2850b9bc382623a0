// rargen serve over the real decode session: every served image is byte-equal to
// generate()'s image k for the same classes, seed and options (demo model with its
// palette; a random 256-token generator with the vqgan-tiny tokenizer for the VQ
// decode path), alone, with option variety, and with many requests sharing the batch
// at different positions. Disconnects free the session's rows.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate, loadGenerator, loadTokenizer, type Generator, type Tokenizer } from '../../lib/generate.js';
import { FIX, hasModelAddon, randomGeneratorFor16x16 } from '../api/helpers.js';
import { parseSse, post, postAndDisconnect, until } from './helpers.js';
import { reference, startRealServer, type RealServer } from './demo-server.js';

const b64 = (s: string) => Buffer.from(s, 'base64');

describe.skipIf(!hasModelAddon())('rargen serve with the decode session', () => {
  let demo: RealServer;
  beforeAll(async () => {
    demo = await startRealServer({ maxRows: 16 });
  });
  afterAll(async () => {
    await demo?.close();
  });

  it('the minimal form answers generate()\'s images, byte for byte', async () => {
    const r = await post(demo.url, { classes: [4, 'star'], seed: 0 });
    expect(r.status).toBe(200);
    const { images } = r.json();
    const ref = await reference(demo.generator, [4, 5], { seed: 0 });
    expect(images.map((i: { class: number; index: number }) => [i.class, i.index])).toEqual([
      [4, 0],
      [5, 1],
    ]);
    images.forEach((img: { png: string }, k: number) => expect(b64(img.png).equals(ref.pngs[k]!)).toBe(true));
  });

  it.each([
    [{ classes: [0, 1, 2], guidanceScale: 0 }, { guidanceScale: 0 }],
    [{ classes: ['heart'], n: 3, seed: 7, guidanceScale: 3, guidanceScalePow: 0.5, temperature: 0.9 }, { seed: 7, guidanceScale: 3, guidanceScalePow: 0.5, temperature: 0.9 }],
    [{ classes: [8, 9], seed: '18446744073709551615', topK: 4, topP: 0.8 }, { seed: 18446744073709551615n, topK: 4, topP: 0.8 }],
    [{ class: 6, n: 2, greedy: true, indexOffset: 40 }, { greedy: true, indexOffset: 40 }],
  ])('byte-equal with options %j', async (body, opts) => {
    const r = await post(demo.url, { ...body, response_format: 'b64_json' });
    expect(r.status).toBe(200);
    const { images } = r.json();
    const labels = images.map((i: { class: number }) => i.class);
    const ref = await reference(demo.generator, labels, opts);
    images.forEach((img: { png: string; index: number }, k: number) => {
      expect(img.index).toBe(((opts as { indexOffset?: number }).indexOffset ?? 0) + k);
      expect(b64(img.png).equals(ref.pngs[k]!)).toBe(true);
    });
  });

  it('concurrent, staggered requests share the batch and each gets its own images', async () => {
    const bodies = Array.from({ length: 10 }, (_, i) => ({ classes: [i, (i + 3) % 10], seed: 100 + i, guidanceScale: i % 3 === 0 ? 0 : 2 + (i % 2), temperature: 1 + (i % 2) * 0.1 }));
    let peak = 0;
    const watch = setInterval(() => (peak = Math.max(peak, demo.app.scheduler.stats().activeImages)), 2);
    let replies;
    try {
      replies = await Promise.all(bodies.map(async (b, i) => (await new Promise((r) => setTimeout(r, i * 40)), post(demo.url, b))));
    } finally {
      clearInterval(watch);
    }
    expect(peak).toBeGreaterThan(2);
    for (let i = 0; i < bodies.length; i++) {
      const { seed, guidanceScale, temperature, classes } = bodies[i]!;
      const ref = await reference(demo.generator, classes, { seed, guidanceScale, temperature });
      const imgs = replies[i]!.json().images;
      imgs.forEach((img: { png: string }, k: number) => expect(b64(img.png).equals(ref.pngs[k]!), `request ${i} image ${k}`).toBe(true));
    }
    expect(demo.app.scheduler.session.freeRows).toBe(16);
  });

  it('SSE streams the same images; tokens format the same tokens', async () => {
    const r = await post(demo.url, { classes: [2, 3], seed: 9, stream: true });
    const ev = parseSse(r.body.toString());
    const ref = await reference(demo.generator, [2, 3], { seed: 9 });
    const images = ev.filter((e) => e.event === 'image').map((e) => e.data);
    expect(images).toHaveLength(2);
    for (const img of images) expect(b64(img.png).equals(ref.pngs[img.k]!)).toBe(true);
    const progress = ev.filter((e) => e.event === 'progress').map((e) => e.data.tokensDone);
    expect(progress.at(-1)).toBe(2 * 256);
    expect(progress.every((v, i) => i === 0 || v > progress[i - 1]!)).toBe(true);
    const t = (await post(demo.url, { classes: [2, 3], seed: 9, response_format: 'tokens' })).json().images;
    expect(t.map((x: { tokens: number[] }) => x.tokens)).toEqual(ref.tokens.map((x) => Array.from(x)));
  });

  it('a disconnect frees its rows in the session', async () => {
    await postAndDisconnect(demo.url, { classes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2] }, 60);
    await until(() => demo.app.scheduler.stats().activeImages === 0 && demo.app.scheduler.stats().queuedImages === 0);
    expect(demo.app.scheduler.session.freeRows).toBe(16);
    expect(demo.app.scheduler.session.active).toBe(0);
    const r = await post(demo.url, { classes: [1], seed: 3 });
    expect(b64(r.json().images[0].png).equals((await reference(demo.generator, [1], { seed: 3 })).pngs[0]!)).toBe(true);
  });

  it('without a tokenizer: tokens only (the default), other formats 400 naming response_format', async () => {
    const gen = await loadGenerator(join(FIX, 'rar-tiny', 'model.bin'), { device: 'cpu' });
    const t = await startRealServer({ generator: gen, tokensOnly: true, maxRows: 4 });
    try {
      const r = await post(t.url, { classes: [1, 2, 1], seed: 4, guidanceScale: 2, guidanceScalePow: 1 });
      expect(r.status).toBe(200);
      const ref = await generate({ generator: gen, classLabels: [1, 2, 1], seed: 4, guidanceScale: 2, guidanceScalePow: 1 });
      expect(r.json().images.map((i: { tokens: number[] }) => i.tokens)).toEqual(ref.tokens.map((x) => Array.from(x)));
      const bad = await post(t.url, { classes: [1], response_format: 'b64_json' });
      expect(bad.status).toBe(400);
      expect(bad.json().error).toMatchObject({ code: 'invalid_field', field: 'response_format' });
    } finally {
      await t.close();
      gen.dispose();
    }
  });

  describe('with a tokenizer (VQ decode, batched across requests)', () => {
    let tmp = '';
    let gen: Generator;
    let tok: Tokenizer;
    let s: RealServer;
    beforeAll(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'rargen-serve-'));
      await randomGeneratorFor16x16(join(tmp, 'gen.bin'));
      gen = await loadGenerator(join(tmp, 'gen.bin'), { device: 'cpu' });
      tok = await loadTokenizer(join(FIX, 'vqgan-tiny', 'model.bin'), { device: 'cpu' });
      s = await startRealServer({ generator: gen, tokenizer: tok, maxRows: 8, limits: { decodeBatch: 4 } });
    });
    afterAll(async () => {
      await s?.close();
      gen?.dispose();
      tok?.dispose();
      if (tmp) await rm(tmp, { recursive: true, force: true });
    });

    it('images equal generate({tokenizer}) byte for byte', async () => {
      const bodies = [
        { classes: [1, 2, 3], seed: 5, guidanceScale: 2, guidanceScalePow: 1 },
        { classes: [4], n: 2, seed: 6, guidanceScale: 0, temperature: 1.2 },
        { classes: [7, 8], seed: 7, topK: 10, guidanceScale: 1 },
      ];
      const replies = await Promise.all(bodies.map((b) => post(s.url, b)));
      for (let i = 0; i < bodies.length; i++) {
        const { classes, n, ...opts } = bodies[i] as { classes: number[]; n?: number };
        const labels = classes.flatMap((c) => Array.from({ length: n ?? 1 }, () => c));
        const ref = await reference(gen, labels, opts, tok);
        const imgs = replies[i]!.json().images;
        expect(imgs).toHaveLength(labels.length);
        imgs.forEach((img: { png: string }, k: number) => expect(b64(img.png).equals(ref.pngs[k]!), `request ${i} image ${k}`).toBe(true));
      }
    });
  });
});
