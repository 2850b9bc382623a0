// bench/serve: `rargen serve`'s continuous batching against sequential generate()
// calls, in the same run. For each model, a sequential baseline (one generate() call
// per one-image request, back to back), then an in-process server on 127.0.0.1 driven
// by 1, 4 and 16 concurrent clients, each sending one-image POST /v1/images requests
// back to back. Reports throughput (img/s) and p50/p99 latency per case, and the goals
// of issue 16: >= 2.5x the sequential throughput at 16 clients, p50 at 4 clients within
// 1.5x of a lone request. Models: the shipped demo (PNG answers) and a RAR-B-width
// random checkpoint cut to 4 blocks (hidden 768, 12 heads, MLP 3072, CFG with RAR-B's
// sampling; token answers: no tokenizer, the generator is what is measured). The
// machine may be shared: each of --rounds rounds runs all the cases of a model close
// together, and each case reports its median round (all rounds are in the JSON).
// Also the decode overlap (--sync-decode vs default) on a VQ-decoding model (a random
// 256-token generator with the vqgan-tiny fixture). Prints one JSON object.
//
//   node dist/bench/serve.js [--models demo,rar-b4,vq-tiny] [--requests 8] [--sequential 8] [--rounds 2] [--clients 1,4,16]
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { generate, loadGenerator, loadTokenizer, type Generator, type Tokenizer } from '../lib/generate.js';
import { saveTorch } from '../lib/io/index.js';
import { packageRoot, native } from '../lib/native.js';
import { PRESETS, positionRows, toNativeRarConfig, type GeneratorConfig } from '../lib/config.js';
import { randomGeneratorWeights } from '../lib/testing/weights.js';
import { createEngine } from '../lib/serve/engine.js';
import { createImageServer } from '../lib/serve/server.js';
import { benchArgs } from './_util.js';

const { values, num, nums } = benchArgs({
  models: 'demo,rar-b4,vq-tiny',
  requests: '8',
  sequential: '8',
  rounds: '2',
  clients: '1,4,16',
  'max-batch': '16',
});
const REQUESTS = num('requests');
const SEQUENTIAL = num('sequential');
const ROUNDS = num('rounds');
const CLIENTS = nums('clients');
const MAX_BATCH = num('max-batch');

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const r3 = (x: number) => Math.round(x * 1000) / 1000;

function postJson(url: string, body: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url + '/v1/images', { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

interface Case {
  clients: number;
  requests: number;
  seconds: number;
  imagesPerSecond: number;
  p50: number;
  p99: number;
}

/** One-image requests as sequential generate() calls, back to back. */
async function sequential(gen: Generator, tok: Tokenizer | undefined, n: number, sampling: object): Promise<Case> {
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await generate({ generator: gen, tokenizer: tok, classLabels: [i % gen.config.numClasses], seed: 1, indexOffset: i, ...sampling });
    lat.push((performance.now() - t) / 1000);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { clients: 0, requests: n, seconds: r3(seconds), imagesPerSecond: r3(n / seconds), p50: r3(percentile(lat, 50)), p99: r3(percentile(lat, 99)) };
}

/** `c` clients sending `total` one-image requests back to back to the server at `url`. */
async function clients(url: string, gen: Generator, c: number, total: number, sampling: object, format: string): Promise<Case> {
  let next = 0;
  const lat: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: c }, async () => {
      for (;;) {
        const i = next++;
        if (i >= total) return;
        const t = performance.now();
        const r = await postJson(url, { classes: [i % gen.config.numClasses], seed: 1, indexOffset: i, ...sampling, response_format: format });
        if (r.status !== 200) throw new Error(`request ${i}: ${r.status} ${r.text.slice(0, 200)}`);
        lat.push((performance.now() - t) / 1000);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  return { clients: c, requests: total, seconds: r3(seconds), imagesPerSecond: r3(total / seconds), p50: r3(percentile(lat, 50)), p99: r3(percentile(lat, 99)) };
}

/**
 * ROUNDS rounds, each: the sequential baseline, then the server at each client count.
 * The machine is shared, so the cases of one round run close together, and the
 * reported case is the median round (by throughput).
 */
async function measure(gen: Generator, tok: Tokenizer | undefined, demo: boolean, sampling: object, format: string, overlapDecode: boolean, withSequential: boolean) {
  const engine = createEngine({ generator: gen, tokenizer: tok, demo, maxRows: 2 * MAX_BATCH });
  const app = createImageServer(engine, { maxQueue: 1024, overlapDecode });
  const url = await app.listen(0, '127.0.0.1');
  const rounds: { sequential?: Case; served: Case[]; loadavg: number }[] = [];
  try {
    await postJson(url, { classes: [0], ...sampling, response_format: format }); // warm-up
    for (let r = 0; r < ROUNDS; r++) {
      const seq = withSequential ? await sequential(gen, tok, SEQUENTIAL, sampling) : undefined;
      const served: Case[] = [];
      for (const c of CLIENTS) served.push(await clients(url, gen, c, Math.max(REQUESTS, 3 * c), sampling, format));
      rounds.push({ ...(seq ? { sequential: seq } : {}), served, loadavg: r3(loadavg()[0]!) });
    }
  } finally {
    await app.close(1000);
  }
  const med = (xs: Case[]) => [...xs].sort((a, b) => a.imagesPerSecond - b.imagesPerSecond)[(xs.length - 1) >> 1]!;
  return {
    sequential: withSequential ? med(rounds.map((x) => x.sequential!)) : undefined,
    served: CLIENTS.map((_, i) => med(rounds.map((x) => x.served[i]!))),
    rounds,
  };
}

function goals(seq: Case, cases: Case[]) {
  const at = (c: number) => cases.find((x) => x.clients === c);
  const c16 = at(16);
  const c4 = at(4);
  const c1 = at(1);
  return {
    speedupAt16: c16 ? r3(c16.imagesPerSecond / seq.imagesPerSecond) : null,
    speedupAt16Goal: 2.5,
    p50At4OverLone: c4 && c1 ? r3(c4.p50 / c1.p50) : null,
    p50At4OverLoneGoal: 1.5,
  };
}

async function main() {
  const models = values.models.split(',');
  const tmp = await mkdtemp(join(tmpdir(), 'rargen-bench-serve-'));
  const result: Record<string, unknown> = {
    bench: 'serve',
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    build: native().buildInfo(),
    maxBatch: MAX_BATCH,
    requestsPerCase: `max(${REQUESTS}, 3 x clients)`,
    rounds: ROUNDS,
    loadavgAtStart: loadavg().map(r3),
    sequentialRequests: SEQUENTIAL,
  };
  try {
    for (const m of models) {
      let gen: Generator;
      let tok: Tokenizer | undefined;
      let sampling: object = {};
      let format = 'b64_json';
      let demo = false;
      if (m === 'demo') {
        gen = await loadGenerator('demo', { device: 'cpu' });
        demo = true;
      } else if (m === 'rar-b4') {
        const cfg: GeneratorConfig = { ...PRESETS['rar-b'].generator, depth: 4, numHeads: 12, headDim: 64 };
        const file = join(tmp, 'rar-b4.bin');
        await saveTorch(file, new Map([...randomGeneratorWeights(toNativeRarConfig(cfg), 7)].map(([n, d, s]) => [n, { dtype: 'float32', shape: s, data: d }] as const)));
        gen = await loadGenerator(file, { device: 'cpu' });
        sampling = { ...PRESETS['rar-b'].sampling };
        format = 'tokens';
      } else if (m === 'vq-tiny') {
        const cfg: GeneratorConfig = { hiddenSize: 256, depth: 2, numHeads: 4, headDim: 64, mlpDim: 1024, seqLen: 256, codebookSize: 64, numClasses: 10, ...positionRows(256) };
        const file = join(tmp, 'vq-gen.bin');
        await saveTorch(file, new Map([...randomGeneratorWeights(toNativeRarConfig(cfg), 8)].map(([n, d, s]) => [n, { dtype: 'float32', shape: s, data: d }] as const)));
        gen = await loadGenerator(file, { device: 'cpu' });
        tok = await loadTokenizer(join(packageRoot(), 'test', 'fixtures', 'vqgan-tiny', 'model.bin'), { device: 'cpu' });
        sampling = { guidanceScale: 2, guidanceScalePow: 1 };
      } else throw new Error(`unknown model ${m} (demo, rar-b4, vq-tiny)`);
      try {
        const c = gen.config;
        const m1 = await measure(gen, tok, demo, sampling, format, true, true);
        const entry: Record<string, unknown> = {
          model: { hiddenSize: c.hiddenSize, depth: c.depth, numHeads: c.numHeads, mlpDim: c.mlpDim, seqLen: c.seqLen, sampling: { ...gen.sampling, ...sampling }, format, tokenizer: tok ? tok.path : null },
          sequential: m1.sequential,
          served: m1.served,
          goals: goals(m1.sequential!, m1.served),
          rounds: m1.rounds,
        };
        if (tok) entry.syncDecode = (await measure(gen, tok, demo, sampling, format, false, false)).served;
        result[m] = entry;
        process.stderr.write(`bench serve: ${m}: ${JSON.stringify(entry.goals)}\n`);
      } finally {
        gen.dispose();
        tok?.dispose();
      }
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
}

main().catch((e) => {
  process.stderr.write(`bench serve: ${(e as Error).stack ?? e}\n`);
  process.exitCode = 1;
});
