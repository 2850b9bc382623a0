// Child of the addon fuzz (test/fuzz/fuzz.test.ts via harness.ts): calls every function
// the addon exports (lib/native.ts native(), which users can reach) with near-valid
// argument lists mutated at 1-3 positions from a pool of wrong types, bad sizes,
// overflowing products, detached buffers and handles of every other kind. After each
// call the typed arrays passed are transferred away (structuredClone with `transfer`)
// and a GC runs while a worker may still be using them. The first cases are the fixed
// crash regressions of issue 12. A call must return, or throw / reject an Error with a
// message of its own (not N-API's generic "Invalid argument" and the like).
import { join } from 'node:path';
import { native } from '../../lib/native.js';
import { positionRows } from '../../lib/config.js';
import { openCheckpoint } from '../../lib/io/index.js';
import { caseRange, runCases, type Outcome } from './child-lib.js';
import { prng } from './mutate.js';

const FIX = join(import.meta.dirname, '..', 'fixtures');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const A = native() as any;
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);

const rarCfg = { hiddenSize: 64, depth: 2, numHeads: 4, mlpDim: 256, seqLen: 16, codebookSize: 32, numClasses: 10, ...positionRows(16) };
const N = rarCfg.seqLen;

async function loaded(kind: 'rar' | 'vq'): Promise<unknown> {
  const m = kind === 'rar' ? A.createRar(rarCfg, 'cpu', 'f32') : A.createVq(vqCfg(), 'cpu');
  const ck = await openCheckpoint(join(FIX, kind === 'rar' ? 'rar-tiny' : 'vqgan-tiny', 'model.bin'));
  for (const [name, info] of ck.tensors) A.setWeight(m, name, await ck.readFloat32(name), info.shape);
  await ck.close();
  A.finalize(m);
  return m;
}
function vqCfg() {
  // test/fixtures/vqgan-tiny/config.json
  return { hiddenChannels: 32, channelMult: [1, 1, 2], numResBlocks: 2, zChannels: 32, codebookSize: 64, resolution: 64 };
}

/** Fresh handles of every kind, for each case (free functions may consume them). */
function handles(): Record<string, unknown> {
  const inc = A.inceptionCreate('cpu', 1);
  const stats = A.featureStatsCreate(4);
  const trainer = A.createTrainer(rarCfg, 'cpu', { dropout: 0, attnDropout: 0 });
  const rar = A.createRar(rarCfg, 'cpu', 'f32');
  const vq = A.createVq(vqCfg(), 'cpu');
  return {
    inc,
    stats,
    trainer,
    trainerWrapped: { __rargenTrainer: trainer }, // the trainer handle of old: refused now
    rar,
    vq,
    fakeModel: Object.create(Object.getPrototypeOf(rar)),
    trainerOfStats: { __rargenTrainer: stats },
    trainerOfInception: { __rargenTrainer: inc },
    plain: {},
  };
}

const detached = (): Float32Array => {
  const a = new Float32Array(16);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  return a;
};

function pool(r: () => number, h: Record<string, unknown>): unknown {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const k = () => pick([0, 1, 3, 4, 8, 16, 64, 1024]);
  const group = Math.floor(r() * 5);
  if (group === 0) return h[pick(Object.keys(h))];
  if (group === 1) return pick([0, 1, 2, 3, 4, 16, -1, 1.5, NaN, Infinity, -Infinity, 2 ** 16, 2 ** 20, 2 ** 24, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 53, -(2 ** 31), 1e300]);
  if (group === 2) return pick([() => new Float32Array(k()), () => new Uint8Array(k()), () => new Int32Array(k()), () => new Float64Array(k()), detached, () => new Float32Array(new ArrayBuffer(64), 16, 4), () => new Int32Array(k()).fill(-1)])();
  if (group === 3) return pick([undefined, null, true, false, '', 'cpu', 'cuda', 'cuda:99', 'f32', 'param', 'grad', 'fc.bias', 'x'.repeat(10000), 1n, Symbol('s')]);
  return pick([[], [1, 2], [2 ** 40], [-1], [1.5], { k: 2 ** 40 }, { rowBlock: 2 ** 20, colBlock: 2 ** 20 }, { device: 'cuda' }, { onProgress: 5 }, { onProgress: () => undefined }, rarCfg, { ...rarCfg, hiddenSize: 2 ** 16, mlpDim: 2 ** 18 }, { ...rarCfg, seqLen: 2 ** 16 }, () => undefined]);
}

/** Near-valid arguments of each export. */
function typical(fn: string, h: Record<string, unknown>, rar: unknown, vq: unknown): unknown[] {
  const f32 = (n: number) => new Float32Array(n).fill(0.5);
  const gen = { classIds: Int32Array.of(1, 2), guidanceScale: 2, guidanceScalePow: 1, temperature: 1, topK: 0, topP: 1, greedy: false, seed: '1', indexOffset: 0 };
  const eye = (d: number) => Float64Array.from({ length: d * d }, (_, i) => (i % (d + 1) === 0 ? 1 : 0));
  const t: Record<string, unknown[]> = {
    inceptionParamTable: [],
    inceptionCreate: ['cpu', 1],
    inceptionSetWeight: [h.inc, 'fc.bias', f32(1008), [1008]],
    inceptionFinalize: [h.inc],
    inceptionForward: [h.inc, new Uint8Array(12), 1, 2, 2],
    inceptionFree: [h.inc],
    tf1ResizeBilinear: [new Uint8Array(12), 1, 2, 2, 3, 3],
    featureStatsCreate: [4],
    featureStatsAdd: [h.stats, f32(4 * 64), 64],
    featureStatsResult: [h.stats],
    frechetDistance: [Float64Array.of(0, 1), eye(2), Float64Array.of(1, 0), eye(2)],
    inceptionScore: [Float32Array.from({ length: 64 }, (_, i) => i % 7), 16, 4, 4],
    precisionRecall: [Float32Array.from({ length: 64 }, (_, i) => i), 16, Float32Array.from({ length: 64 }, (_, i) => 64 - i), 16, 4, { k: 3 }],
    createTrainer: [rarCfg, 'cpu', { dropout: 0, attnDropout: 0 }],
    trainInfo: [h.trainer],
    trainSetTensor: [h.trainer, 'param', 'x', f32(4)],
    trainGetTensor: [h.trainer, 'param', 'x'],
    trainForwardBackward: [h.trainer, { ids: new Int32Array(2 * N), condition: Int32Array.of(33, 34), orders: Int32Array.from({ length: 2 * N }, (_, i) => i % N) }],
    trainOptimizerStep: [h.trainer, { lr: 1e-3, step: 1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.02, maxGradNorm: 1 }],
    trainFree: [h.trainer],
    buildInfo: [],
    cudaStatus: [],
    backendSupports: ['cpu', 'attention', 'f16'],
    createRar: [rarCfg, 'cpu', 'f32'],
    createVq: [vqCfg(), 'cpu'],
    setWeight: [h.rar, 'x', f32(1), [1]],
    finalize: [h.rar],
    free: [h.rar],
    rarForward: [rar, new Int32Array(N), Int32Array.of(33), Int32Array.from({ length: N }, (_, i) => i)],
    rarDecodeSteps: [rar, new Int32Array(N), Int32Array.of(33)],
    rarGenerate: [rar, gen],
    cancel: [1],
    vqDecode: [vq, new Int32Array(256), 1],
    vqEncode: [vq, f32(3 * 64 * 64), 1],
  };
  return t[fn] ?? [];
}

/** The fixed regressions: each finding of issue 12, then every handle-taking export with every foreign handle. */
function regressions(h: Record<string, unknown>): [string, unknown[]][] {
  const out: [string, unknown[]][] = [
    ['inceptionScore', [new Float32Array(0), 2 ** 40, 2 ** 24, 1]],
    ['tf1ResizeBilinear', [new Uint8Array(3), 1, 1, 1, 65536, 65536]],
    ['featureStatsCreate', [65536]],
    ['precisionRecall', [new Float32Array(16), 4, new Float32Array(16), 4, 4, { rowBlock: 2 ** 20, colBlock: 2 ** 20 }]],
    ['featureStatsAdd', [h.stats, new Float32Array(4 * 4096).fill(1), 4096]],
    ['inceptionScore', [new Float32Array(1000 * 100).fill(1), 1000, 100, 10]],
    ['frechetDistance', [new Float64Array(64), new Float64Array(64 * 64), new Float64Array(64), new Float64Array(64 * 64)]],
    ['precisionRecall', [new Float32Array(512 * 16).fill(1), 512, new Float32Array(512 * 16).fill(2), 512, 16]],
  ];
  const takers = ['inceptionSetWeight', 'inceptionFinalize', 'inceptionForward', 'inceptionFree', 'featureStatsAdd', 'featureStatsResult', 'trainInfo', 'trainSetTensor', 'trainGetTensor', 'trainForwardBackward', 'trainOptimizerStep', 'trainFree', 'setWeight', 'finalize', 'free', 'rarForward', 'rarDecodeSteps', 'rarGenerate', 'vqDecode', 'vqEncode'];
  for (const f of takers) for (const k of Object.keys(h)) out.push([f, [k, ...typical(f, h, null, null).slice(1)]]);
  return out;
}

// An Error with its own message; not N-API's generic ones (a C++ helper missing a check)
const GENERIC = /^(Invalid argument|An? \w+ was expected|Invalid pointer|napi_|std::|unknown native error|$)/i;
const isClean = (e: unknown): boolean => e instanceof Error && !GENERIC.test(e.message);

const { seed, from, to } = caseRange();
const rar = await loaded('rar');
const vq = await loaded('vq');
const FNS = Object.keys(A).filter((k) => typeof A[k] === 'function').sort();
const nReg = regressions(handles()).length;

let shared = handles();
await runCases(from, to, async (n): Promise<Outcome> => {
  // handles are shared between cases unless the call may free or change them
  const fresh = n < nReg || /free|finalize|setWeight|SetTensor/i.test(FNS[n % FNS.length]!);
  const h = fresh ? handles() : shared;
  let fn: string;
  let args: unknown[];
  if (n < nReg) {
    [fn, args] = regressions(h)[n]!;
    if (typeof args[0] === 'string' && args[0] in h) args = [h[args[0] as string], ...args.slice(1)];
  } else {
    const r = prng((seed * 0x9e3779b1) ^ (n * 0x85ebca6b));
    fn = FNS[n % FNS.length]!;
    const freeing = /free/i.test(fn);
    args = typical(fn, h, freeing ? h.rar : rar, freeing ? h.vq : vq).slice();
    const k = 1 + Math.floor(r() * 3);
    for (let i = 0; i < k; i++) {
      const op = r();
      if (op < 0.1) args.length = Math.floor(r() * (args.length + 1));
      else if (op < 0.15) args.push(pool(r, h));
      else args[Math.floor(r() * Math.max(1, args.length + 1))] = pool(r, h);
    }
  }
  const what = `${fn}(${args.map((a) => (a === null ? 'null' : ArrayBuffer.isView(a) ? `${a.constructor.name}(${(a as Float32Array).length})` : typeof a === 'object' ? 'object' : String(a).slice(0, 30))).join(', ')})`;
  try {
    const ret = A[fn](...args);
    // free every typed array's memory under the call: transfer it away, then collect
    for (const a of args) {
      if (ArrayBuffer.isView(a) && a.buffer.byteLength > 0) structuredClone(a.buffer, { transfer: [a.buffer] });
    }
    gc();
    if (ret && typeof (ret as Promise<unknown>).then === 'function') await ret;
    return { outcome: 'loaded' };
  } catch (e) {
    return isClean(e) ? { outcome: 'clean' } : { outcome: 'unclean', detail: `${what}: ${(e as Error)?.constructor?.name}: ${(e as Error)?.message ?? String(e)}` };
  } finally {
    if (fresh) {
      // native memory is invisible to V8's heuristics: free what can be freed, then collect
      for (const [f, k] of [['free', 'rar'], ['free', 'vq'], ['trainFree', 'trainer'], ['inceptionFree', 'inc']] as const) {
        try {
          A[f](h[k]);
        } catch {
          /* busy or already freed */
        }
      }
      gc();
    }
  }
});
