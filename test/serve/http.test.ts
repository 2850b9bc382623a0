// The HTTP surface of `rargen serve` over the fake session (test/serve/fake-session.ts):
// routes, validation (400 naming the field), 413, 415, 429 + Retry-After, 404/405,
// SSE, disconnects and timeouts freeing rows, continuous admission across requests,
// metrics, OpenAPI and graceful close. Needs no model and no native addon.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { connect } from 'node:net';
import { decodePng } from '../../lib/image.js';
import { fakeToken } from './fake-session.js';
import { FAKE_SEQ_LEN, FAKE_V, fakePng, http, parseSse, post, postAndDisconnect, startFakeServer, until, type FakeServer } from './helpers.js';

const expectedTokens = (classId: number, seed: number, index: number) => Array.from({ length: FAKE_SEQ_LEN }, (_, j) => fakeToken({ classId, seed: BigInt(seed), index }, j, FAKE_V));

describe('rargen serve HTTP layer (fake session)', () => {
  let s: FakeServer;
  beforeAll(async () => {
    s = await startFakeServer({ maxRows: 8, stepMs: 1, limits: { maxQueue: 40, maxImages: 16, maxBodyBytes: 2048, timeoutMs: 30_000 } });
  });
  afterAll(async () => {
    await s?.app.close(1000);
  });

  it('answers the minimal form with one image per class, in order, ids and names', async () => {
    const r = await post(s.url, { classes: [207, 'tabby'], seed: 0 });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    const { images } = r.json();
    expect(images.map((i: { class: number; index: number }) => [i.class, i.index])).toEqual([
      [207, 0],
      [281, 1],
    ]);
    expect(Object.keys(images[0]).sort()).toEqual(['class', 'index', 'png']);
    const png0 = Buffer.from(images[0].png, 'base64');
    expect(png0.equals(fakePng(Int32Array.from(expectedTokens(207, 0, 0))))).toBe(true);
    expect(decodePng(png0).width).toBe(4);
  });

  it('n, seed strings, indexOffset and response_format tokens', async () => {
    const r = await post(s.url, { classes: [1, 2], n: 2, seed: '18446744073709551615', indexOffset: 5, response_format: 'tokens' });
    expect(r.status).toBe(200);
    const { images } = r.json();
    expect(images.map((i: { class: number }) => i.class)).toEqual([1, 1, 2, 2]);
    expect(images.map((i: { index: number }) => i.index)).toEqual([5, 6, 7, 8]);
    images.forEach((img: { class: number; index: number; tokens: number[] }) => expect(img.tokens).toEqual(expectedTokens(img.class, Number(18446744073709551615n % 1000003n), img.index)));
  });

  it('response_format png answers the PNG file of a one-image request', async () => {
    const r = await post(s.url, { class: 'golden retriever', seed: 3, response_format: 'png' });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('image/png');
    expect(r.headers['x-rargen-class']).toBe('207');
    expect(r.body.equals(fakePng(Int32Array.from(expectedTokens(207, 3, 0))))).toBe(true);
  });

  it.each([
    ['{"classes": [1', 'invalid_json', undefined],
    ['[1, 2]', 'invalid_body', undefined],
    [{ classes: [1], colour: 'red' }, 'unknown_field', 'colour'],
    [{}, 'missing_field', 'classes'],
    [{ classes: [] }, 'invalid_field', 'classes'],
    [{ classes: [1, true] }, 'invalid_field', 'classes[1]'],
    [{ classes: [1, 1000] }, 'invalid_field', 'classes[1]'],
    [{ classes: [1.5] }, 'invalid_field', 'classes[0]'],
    [{ classes: ['tabyy cat'] }, 'unknown_class', 'classes[0]'],
    [{ classes: [1], class: 2 }, 'invalid_field', 'class'],
    [{ classes: [1], n: 0 }, 'invalid_field', 'n'],
    [{ classes: [1, 2], n: 9 }, 'too_many_images', 'n'],
    [{ classes: [1], seed: -1 }, 'invalid_field', 'seed'],
    [{ classes: [1], seed: '18446744073709551616' }, 'invalid_field', 'seed'],
    [{ classes: [1], seed: 1e300 }, 'invalid_field', 'seed'],
    [{ classes: [1], temperature: 0 }, 'invalid_field', 'temperature'],
    [{ classes: [1], guidanceScale: -1 }, 'invalid_field', 'guidanceScale'],
    [{ classes: [1], topP: 1.5 }, 'invalid_field', 'topP'],
    [{ classes: [1], topK: 2.5 }, 'invalid_field', 'topK'],
    [{ classes: [1], topK: 65 }, 'invalid_field', 'topK'],
    [{ classes: [1], greedy: 'yes' }, 'invalid_field', 'greedy'],
    [{ classes: [1], response_format: 'jpeg' }, 'invalid_field', 'response_format'],
    [{ classes: [1, 2], response_format: 'png' }, 'invalid_field', 'response_format'],
    [{ classes: [1], stream: 1 }, 'invalid_field', 'stream'],
  ])('400 for %j: %s naming %s', async (body, code, field) => {
    const r = await post(s.url, body);
    expect(r.status).toBe(400);
    const e = r.json().error;
    expect(e.code).toBe(code);
    expect(e.field).toBe(field);
    expect(typeof e.message).toBe('string');
    if (field) expect(e.message).toContain(field);
  });

  it('an unknown class name gets the close candidates', async () => {
    const e = (await post(s.url, { classes: ['tabyy'] })).json().error;
    expect(e.message).toMatch(/did you mean 281 \(tabby, tabby cat\)/);
  });

  it('413 for a body over the limit, declared or chunked; 415 for a non-JSON type', async () => {
    const big = JSON.stringify({ classes: [1], pad: 'x'.repeat(4000) });
    const r = await post(s.url, big);
    expect(r.status).toBe(413);
    expect(r.json().error.code).toBe('body_too_large');
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = request(s.url + '/v1/images', { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      for (let i = 0; i < 10; i++) req.write('x'.repeat(400));
      req.end();
    });
    expect(chunked).toBe(413);
    const t = await http(s.url, '/v1/images', { body: 'classes=1', headers: { 'content-type': 'multipart/form-data; boundary=x' } });
    expect(t.status).toBe(415);
  });

  it('404 and 405 as JSON errors; GET routes answer', async () => {
    expect((await http(s.url, '/nope')).json().error.code).toBe('not_found');
    const m = await http(s.url, '/v1/images');
    expect(m.status).toBe(405);
    expect(m.headers.allow).toBe('POST');
    expect((await http(s.url, '/healthz')).json().status).toBe('ok');
    const models = (await http(s.url, '/v1/models')).json();
    expect(models.data[0]).toMatchObject({ id: 'fake', numClasses: 1000, tokensPerImage: FAKE_SEQ_LEN, maxImagesPerRequest: 16, maxRows: 8 });
    const classes = (await http(s.url, '/v1/classes')).json().classes;
    expect(classes).toHaveLength(1000);
    expect(classes[281]).toEqual({ id: 281, name: 'tabby', synonyms: ['tabby', 'tabby cat'] });
    const page = await http(s.url, '/');
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.body.toString()).toContain('<script type="module" src="app.js"></script>');
    expect((await http(s.url, '/app.js')).status).toBe(200);
    expect((await http(s.url, '/style.css')).status).toBe(200);
  });

  it('streams start, per-step progress, each image and done as Server-Sent Events', async () => {
    for (const how of ['field', 'accept'] as const) {
      const r = how === 'field' ? await post(s.url, { classes: [3, 4, 5], seed: 1, stream: true }) : await post(s.url, { classes: [3, 4, 5], seed: 1 }, { accept: 'text/event-stream' });
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toBe('text/event-stream; charset=utf-8');
      const ev = parseSse(r.body.toString());
      expect(ev[0]).toEqual({ event: 'start', data: { images: 3, tokensPerImage: FAKE_SEQ_LEN, classes: [3, 4, 5] } });
      const progress = ev.filter((e) => e.event === 'progress').map((e) => e.data);
      // one progress event per step: 16 tokens per image, all three in the same steps
      expect(progress.length).toBe(FAKE_SEQ_LEN);
      expect(progress.map((p) => p.tokensDone)).toEqual(Array.from({ length: FAKE_SEQ_LEN }, (_, i) => 3 * (i + 1)));
      expect(progress.at(-1)).toMatchObject({ tokensTotal: 3 * FAKE_SEQ_LEN, fraction: 1, imagesTotal: 3 });
      const images = ev.filter((e) => e.event === 'image').map((e) => e.data);
      expect(images.map((i) => i.k).sort()).toEqual([0, 1, 2]);
      for (const img of images) expect(Buffer.from(img.png, 'base64').equals(fakePng(Int32Array.from(expectedTokens(img.class, 1, img.index))))).toBe(true);
      expect(ev.at(-1)!.event).toBe('done');
      expect(ev.at(-1)!.data.images).toBe(3);
    }
  });

  it('admits new requests into the running batch at any step; every answer is right', async () => {
    const stepsBefore = s.session.steps;
    s.session.peakRows = 0;
    const bodies = Array.from({ length: 8 }, (_, i) => ({ classes: [i, i + 10], seed: i, guidanceScale: i % 2 ? 0 : 2 }));
    // staggered arrivals: later requests join while earlier ones are part-way
    const replies = await Promise.all(bodies.map(async (b, i) => (await new Promise((r) => setTimeout(r, i * 7)), post(s.url, { ...b, response_format: 'tokens' }))));
    replies.forEach((r, i) => {
      expect(r.status).toBe(200);
      const imgs = r.json().images;
      expect(imgs.map((x: { tokens: number[] }) => x.tokens)).toEqual([expectedTokens(i, i, 0), expectedTokens(i + 10, i, 1)]);
    });
    // 8 requests of 16 steps each ran in far fewer than 8 x 16 steps, with the batch full at times
    expect(s.session.steps - stepsBefore).toBeLessThan(8 * FAKE_SEQ_LEN);
    expect(s.session.peakRows).toBe(8);
    expect(s.app.scheduler.stats()).toMatchObject({ queuedImages: 0, activeImages: 0, rowsUsed: 0 });
  });

  it('batches the renders of images that finish together', async () => {
    s.renders.length = 0;
    const r = await post(s.url, { classes: [1, 2, 3, 4, 5, 6, 7, 8], guidanceScale: 0 });
    expect(r.status).toBe(200);
    expect(Math.max(...s.renders)).toBe(8);
  });

  it('a client that disconnects frees its rows and queue places', async () => {
    const slow = await startFakeServer({ maxRows: 4, stepMs: 20, limits: { maxQueue: 64 } });
    try {
      await postAndDisconnect(slow.url, { classes: Array.from({ length: 12 }, (_, i) => i), guidanceScale: 2 }, 150);
      await until(() => slow.app.scheduler.stats().activeImages === 0 && slow.app.scheduler.stats().queuedImages === 0);
      expect(slow.session.freeRows).toBe(4);
      expect(slow.session.active).toBe(0);
      expect(slow.app.scheduler.stats().cancelledImages).toBe(12);
      // the server goes on serving
      const r = await post(slow.url, { classes: [7], response_format: 'tokens' });
      expect(r.json().images[0].tokens).toEqual(expectedTokens(7, 0, 0));
      // an SSE client that goes away, too
      await new Promise<void>((resolve) => {
        const req = request(slow.url + '/v1/images', { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, agent: false });
        req.on('response', (res) => res.once('data', () => (req.destroy(), resolve())));
        req.on('error', () => undefined);
        req.end(JSON.stringify({ classes: [1, 2, 3] }));
      });
      await until(() => slow.session.active === 0);
      expect(slow.app.scheduler.pendingRequests).toBe(0);
    } finally {
      await slow.app.close(100);
    }
  });

  it('429 with Retry-After when the queue is full; 504 when a request times out', async () => {
    const busy = await startFakeServer({ maxRows: 2, stepMs: 30, limits: { maxQueue: 4, maxImages: 4, timeoutMs: 400 } });
    try {
      const first = post(busy.url, { classes: [1, 2, 3, 4, 5].slice(0, 4), guidanceScale: 2 });
      await until(() => busy.app.scheduler.stats().activeImages === 1);
      const r = await post(busy.url, { classes: [1, 2, 3, 4] });
      expect(r.status).toBe(429);
      expect(r.json().error.code).toBe('queue_full');
      expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      const t = await first;
      expect(t.status).toBe(504);
      expect(t.json().error.code).toBe('timeout');
      await until(() => busy.session.active === 0);
      expect(busy.session.freeRows).toBe(2);
      const metrics = (await http(busy.url, '/metrics')).body.toString();
      expect(metrics).toMatch(/rargen_requests_total\{route="images",code="429"\} 1/);
      expect(metrics).toMatch(/rargen_requests_total\{route="images",code="504"\} 1/);
    } finally {
      await busy.app.close(100);
    }
  });

  it('/metrics is Prometheus text with queue, occupancy, rate and latency', async () => {
    const m = (await http(s.url, '/metrics')).body.toString();
    for (const name of ['rargen_queue_images', 'rargen_batch_occupancy', 'rargen_images_per_second', 'rargen_images_total', 'rargen_step_batch_occupancy_bucket', 'rargen_request_duration_seconds_bucket'])
      expect(m).toContain(name);
    expect(m).toMatch(/# TYPE rargen_request_duration_seconds histogram/);
    const count = Number(/rargen_request_duration_seconds_count (\d+)/.exec(m)![1]);
    expect(count).toBeGreaterThanOrEqual(13);
    expect(Number(/^rargen_images_total (\d+)/m.exec(m)![1])).toBeGreaterThanOrEqual(30);
    expect(Number(/^rargen_images_per_second (\S+)/m.exec(m)![1])).toBeGreaterThan(0);
    // each line is a comment or `name{labels} value`
    for (const line of m.trim().split('\n')) expect(line).toMatch(/^(# (HELP|TYPE) \S+ .+|[a-z_]+(\{[^}]*\})? \S+)$/);
  });

  it('/openapi.json describes the request fields the server accepts', async () => {
    const doc = (await http(s.url, '/openapi.json')).json();
    expect(doc.openapi).toBe('3.1.0');
    const req = doc.components.schemas.ImageRequest;
    expect(Object.keys(req.properties).sort()).toEqual(['class', 'classes', 'greedy', 'guidanceScale', 'guidanceScalePow', 'indexOffset', 'n', 'response_format', 'seed', 'stream', 'temperature', 'topK', 'topP'].sort());
    expect(req.additionalProperties).toBe(false);
    expect(req.properties.classes.maxItems).toBe(16);
    expect(req.properties.response_format.enum).toEqual(['b64_json', 'png', 'tokens']);
    expect(Object.keys(doc.paths).sort()).toEqual(['/healthz', '/metrics', '/openapi.json', '/v1/classes', '/v1/images', '/v1/models']);
  });

  it('a malformed request line gets 400, not a crash', async () => {
    const reply = await new Promise<string>((resolve) => {
      const c = connect(Number(new URL(s.url).port), '127.0.0.1', () => c.write('GARBAGE\r\n\r\n'));
      let text = '';
      c.on('data', (d) => (text += d));
      c.on('close', () => resolve(text));
    });
    expect(reply).toMatch(/^HTTP\/1.1 400/);
    expect((await http(s.url, '/healthz')).status).toBe(200);
  });

  it('close() lets accepted requests finish, refuses new ones, frees the session', async () => {
    const g = await startFakeServer({ maxRows: 4, stepMs: 10 });
    const inflight = post(g.url, { classes: [1, 2], response_format: 'tokens' });
    await until(() => g.session.active === 2);
    const closing = g.app.close(5000);
    const r = await inflight;
    expect(r.status).toBe(200);
    expect(r.json().images[1].tokens).toEqual(expectedTokens(2, 0, 1));
    await closing;
    expect(g.session.disposed).toBe(true);
    await expect(post(g.url, { classes: [1] })).rejects.toThrow(/ECONNREFUSED/);
    // past the grace period, what is left is cancelled with 503
    const h = await startFakeServer({ maxRows: 2, stepMs: 50 });
    const late = post(h.url, { classes: [1, 2, 3], stream: true });
    await until(() => h.session.active > 0);
    await h.app.close(100);
    const ev = parseSse((await late).body.toString());
    expect(ev.at(-1)).toEqual({ event: 'error', data: { error: { code: 'shutting_down', message: 'the server shut down before this request finished' } } });
    expect(h.session.active).toBe(0);
  });
});
