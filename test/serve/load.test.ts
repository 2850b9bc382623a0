// A bounded load test on 127.0.0.1 (issue 16): 500 requests from 32 concurrent clients
// against the demo model, with bad requests (400, 413) and clients that disconnect
// mid-request mixed in. Asserts: no 5xx, every good request answered 200, every
// completed image byte-equal to generate()'s, the session's rows all free at the end,
// and RSS stable (the growth between the first and the last tenth of the run bounded).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasModelAddon } from '../api/helpers.js';
import { parseSse, post, postAndDisconnect, until } from './helpers.js';
import { reference, startRealServer, type RealServer } from './demo-server.js';

const REQUESTS = 500;
const CLIENTS = 32;
const SEEDS = 8;
// per seed: two classes and a guidance scale; a good request asks for a prefix
const PLAN = Array.from({ length: SEEDS }, (_, s) => ({ seed: 1000 + s, classes: [s % 10, (s * 3 + 1) % 10], guidanceScale: s % 2 ? 0 : 2 }));
const BAD: unknown[] = ['{"classes": [1', { classes: [] }, { classes: [1], seed: -1 }, { classes: ['nope'] }, { classes: [1], temperature: 0 }, { classes: [1], extra: 1 }, { classes: [1], pad: 'x'.repeat(100_000) }];

describe.skipIf(!hasModelAddon())('load: 500 requests from 32 clients', () => {
  let s: RealServer;
  const refs: Buffer[][] = [];
  beforeAll(async () => {
    s = await startRealServer({ maxRows: 32 });
    for (const p of PLAN) refs.push((await reference(s.generator, p.classes, { seed: p.seed, guidanceScale: p.guidanceScale })).pngs);
  });
  afterAll(async () => {
    await s?.close();
  });

  it('no 5xx, every image byte-equal, rows freed, RSS stable', async () => {
    const statuses = new Map<number, number>();
    const count = (st: number) => statuses.set(st, (statuses.get(st) ?? 0) + 1);
    let next = 0;
    let checked = 0;
    let disconnects = 0;
    const failures: string[] = [];
    const rss: number[] = [];
    const sampler = setInterval(() => rss.push(process.memoryUsage.rss()), 200);
    const t0 = performance.now();
    const client = async () => {
      for (;;) {
        const i = next++;
        if (i >= REQUESTS) return;
        const kind = i % 20;
        if (kind === 0 || kind === 10) {
          const body = BAD[(i / 10) % BAD.length | 0];
          const r = await post(s.url, body as never).catch(() => undefined);
          if (r) count(r.status);
          else count(413); // the server may close the socket while a large body is still being sent
          continue;
        }
        if (kind === 5) {
          disconnects++;
          await postAndDisconnect(s.url, { classes: [i % 10, (i + 1) % 10], seed: i }, 10 + (i % 7) * 25);
          continue;
        }
        const p = PLAN[i % SEEDS]!;
        const n = 1 + (i % 3 === 0 ? 1 : 0);
        const stream = kind === 7;
        const r = await post(s.url, { classes: p.classes.slice(0, n), seed: p.seed, guidanceScale: p.guidanceScale, stream });
        count(r.status);
        if (r.status !== 200) {
          failures.push(`request ${i}: ${r.status} ${r.body.toString().slice(0, 200)}`);
          continue;
        }
        const images: { png: string; index: number }[] = stream ? parseSse(r.body.toString()).filter((e) => e.event === 'image').map((e) => e.data) : r.json().images;
        if (images.length !== n) failures.push(`request ${i}: ${images.length} images, wanted ${n}`);
        for (const img of images) {
          if (!Buffer.from(img.png, 'base64').equals(refs[i % SEEDS]![img.index]!)) failures.push(`request ${i} image ${img.index} differs from generate()`);
          else checked++;
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: CLIENTS }, client));
    } finally {
      clearInterval(sampler);
    }
    const seconds = (performance.now() - t0) / 1000;
    await until(() => s.app.scheduler.stats().activeImages === 0 && s.app.scheduler.stats().rendering === 0);
    const tenth = Math.max(1, Math.floor(rss.length / 10));
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
    const early = median(rss.slice(tenth, 2 * tenth));
    const late = median(rss.slice(-tenth));
    console.log(
      `load: ${REQUESTS} requests in ${seconds.toFixed(1)} s, statuses ${JSON.stringify(Object.fromEntries(statuses))}, ${checked} images checked, ${disconnects} disconnects, ` +
        `RSS ${(early / 2 ** 20).toFixed(0)} -> ${(late / 2 ** 20).toFixed(0)} MiB, ${s.app.scheduler.stats().cancelledImages} images cancelled`,
    );
    expect(failures).toEqual([]);
    expect([...statuses.keys()].filter((st) => st >= 500)).toEqual([]);
    expect(statuses.get(400)! + (statuses.get(413) ?? 0)).toBe(50);
    expect(statuses.get(200)).toBe(REQUESTS - 50 - disconnects);
    expect(checked).toBeGreaterThan(500);
    expect(s.app.scheduler.stats()).toMatchObject({ queuedImages: 0, activeImages: 0, rowsUsed: 0 });
    expect(s.app.scheduler.session.freeRows).toBe(32);
    expect(s.app.scheduler.pendingRequests).toBe(0);
    expect(late - early).toBeLessThan(RSS_GROWTH_BOUND);
  });
});

/** Bound on the RSS growth over the run (set from the measured growth, see the log line). */
const RSS_GROWTH_BOUND = 64 * 2 ** 20;
