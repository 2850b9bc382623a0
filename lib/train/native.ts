// The training half of the native contract (src/binding_train.cc; its types are in
// lib/native.ts's NativeAddon) and a validating wrapper around it. As everywhere in
// rargen, TypeScript checks and normalises every argument before it crosses into
// C++; the C++ side re-checks sizes only.
//
// The native trainer owns, on its backend: the float32 parameters, their gradients
// (one flat buffer), the AdamW moments, and the activations that the training
// forward saves for backward. All randomness (orders, label drops, the dropout seed)
// arrives from TS (lib/train/data.ts).
import {
  native,
  type NativeAddon,
  type NativeOptimizerOptions,
  type NativeTrainBatch,
  type NativeTrainer,
  type NativeTrainerInfo,
  type NativeTrainerOptions,
  type NativeTrainResult,
  type TrainTensorKind,
} from '../native.js';
import type { GeneratorConfig } from '../config.js';
import { toNativeRarConfig } from '../config.js';
import { describeValue, ValidationError } from '../validate.js';

export type {
  NativeOptimizerOptions,
  NativeTrainBatch,
  NativeTrainer,
  NativeTrainerInfo,
  NativeTrainerOptions,
  NativeTrainResult,
  TrainTensorKind,
};

export type TrainAddon = Pick<
  NativeAddon,
  'createTrainer' | 'trainInfo' | 'trainSetTensor' | 'trainGetTensor' | 'trainForwardBackward' | 'trainOptimizerStep' | 'trainFree'
>;

export function trainAddon(): TrainAddon {
  const a = native() as unknown as Partial<TrainAddon>;
  if (typeof a.createTrainer !== 'function')
    throw new Error(
      'rargen: this build of the native addon has no training functions (src/binding_train.cc is not registered); ' +
        'rebuild with `npm run build:native` from a checkout that includes it',
    );
  return a as TrainAddon;
}

function checkProb(v: number, what: string): void {
  if (!(typeof v === 'number' && v >= 0 && v < 1)) throw new ValidationError(`Expected a number in [0, 1) for ${what} but received ${describeValue(v)}`);
}

/** A native trainer with argument checks on every call. */
export class Trainer {
  readonly info: NativeTrainerInfo;
  private readonly index = new Map<string, number>();
  private handle: NativeTrainer | null;

  constructor(
    readonly config: GeneratorConfig,
    device: string,
    readonly options: NativeTrainerOptions,
    private readonly addon: TrainAddon = trainAddon(),
  ) {
    checkProb(options.dropout, 'dropout');
    checkProb(options.attnDropout, 'attnDropout');
    this.handle = addon.createTrainer(toNativeRarConfig(config), device, options);
    this.info = addon.trainInfo(this.handle);
    this.info.names.forEach((n, i) => this.index.set(n, i));
  }

  private get h(): NativeTrainer {
    if (!this.handle) throw new ValidationError('rargen: the trainer was freed');
    return this.handle;
  }

  shapeOf(name: string): number[] {
    const i = this.index.get(name);
    if (i === undefined) throw new ValidationError(`Expected a generator parameter name (e.g. ${this.info.names.slice(0, 3).join(', ')}) but received ${describeValue(name)}`);
    return this.info.shapes[i]!;
  }

  setTensor(kind: Exclude<TrainTensorKind, 'grad'>, name: string, data: Float32Array, shape?: readonly number[]): void {
    const want = this.shapeOf(name);
    const n = want.reduce((a, b) => a * b, 1);
    if (shape && (shape.length !== want.length || shape.some((d, i) => d !== want[i])))
      throw new ValidationError(`Expected shape [${want}] for ${name} but received [${shape}]`);
    if (!(data instanceof Float32Array) || data.length !== n)
      throw new ValidationError(`Expected a Float32Array of ${n} values for ${kind} ${name} but received ${data instanceof Float32Array ? `${data.length} values` : describeValue(data)}`);
    this.addon.trainSetTensor(this.h, kind, name, data);
  }

  getTensor(kind: TrainTensorKind, name: string): Float32Array {
    this.shapeOf(name);
    return this.addon.trainGetTensor(this.h, kind, name);
  }

  async forwardBackward(b: NativeTrainBatch): Promise<NativeTrainResult> {
    const { seqLen: N, codebookSize: V, numClasses: K } = this.config;
    const B = b.condition.length;
    if (B < 1) throw new ValidationError('Expected at least one sample for condition but received none');
    if (b.ids.length !== B * N) throw new ValidationError(`Expected ${B} x ${N} tokens for ids but received ${b.ids.length}`);
    if (b.orders.length !== B * N) throw new ValidationError(`Expected ${B} x ${N} positions for orders but received ${b.orders.length}`);
    for (let i = 0; i < b.ids.length; i++)
      if (!(b.ids[i]! >= 0 && b.ids[i]! < V)) throw new ValidationError(`Expected a token between 0 and ${V - 1} for ids[${i}] but received ${b.ids[i]}`);
    for (let i = 0; i < B; i++) {
      const c = b.condition[i]!;
      if (!(c >= V + 1 && c <= V + K + 1)) throw new ValidationError(`Expected a class embedding index between ${V + 1} and ${V + K + 1} for condition[${i}] but received ${c}`);
      const seen = new Uint8Array(N);
      for (let k = 0; k < N; k++) {
        const o = b.orders[i * N + k]!;
        if (!(o >= 0 && o < N) || seen[o]) throw new ValidationError(`Expected a permutation of 0..${N - 1} for orders row ${i} but received ${o} at position ${k}${seen[o] ? ' a second time' : ''}`);
        seen[o] = 1;
      }
    }
    if (!(b.lossScale > 0 && Number.isFinite(b.lossScale))) throw new ValidationError(`Expected a finite number > 0 for lossScale but received ${describeValue(b.lossScale)}`);
    return this.addon.trainForwardBackward(this.h, b);
  }

  async optimizerStep(o: NativeOptimizerOptions): Promise<{ gradNorm: number }> {
    if (!(o.lr >= 0 && Number.isFinite(o.lr))) throw new ValidationError(`Expected a finite number >= 0 for lr but received ${describeValue(o.lr)}`);
    if (!Number.isInteger(o.step) || o.step < 1) throw new ValidationError(`Expected an integer >= 1 for the AdamW step but received ${describeValue(o.step)}`);
    return this.addon.trainOptimizerStep(this.h, { ...o, maxGradNorm: o.maxGradNorm ?? 0 });
  }

  /** Data-parallel: replaces the gradients by their mean over the MPI ranks (lib/dist.ts; main thread). */
  allreduceGrads(): void {
    const f = (this.addon as unknown as { trainAllreduceGrads?: (t: NativeTrainer) => void }).trainAllreduceGrads;
    if (typeof f !== 'function') throw new Error('rargen: this build of the native addon has no trainAllreduceGrads; rebuild with `npm run build:native`');
    f.call(this.addon, this.h);
  }

  free(): void {
    if (this.handle) this.addon.trainFree(this.handle);
    this.handle = null;
  }
}
