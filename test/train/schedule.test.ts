import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildTrainConfig, type SchedulerName } from '../../lib/train/config.js';
import { lrAt, lrScheduleOf, randomRatioAt, randomnessScheduleOf } from '../../lib/train/schedule.js';

interface OfficialCase {
  name: string;
  scheduler: SchedulerName;
  optimizer_lr: number;
  learning_rate: number;
  end_lr: number;
  warmup_steps: number;
  max_train_steps: number;
  steps: number[];
  lr: number[];
}
/** param_groups[0]['lr'] per update of torch AdamW + the official get_scheduler (fixtures/gen_lr.py). */
const OFFICIAL_LR: OfficialCase[] = JSON.parse(readFileSync(new URL('./fixtures/lr-official.json', import.meta.url), 'utf8')).cases;

function relErr(a: number, b: number): number {
  return a === b ? 0 : Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b));
}

describe('learning-rate schedule', () => {
  const official = lrScheduleOf(buildTrainConfig('').config); // 4e-4, warmup 62,500, end 1e-5, 250,000 steps

  it('warms up linearly from 0 (step 0 uses lr 0)', () => {
    expect(lrAt(official, 0)).toBe(0);
    expect(lrAt(official, 1)).toBeCloseTo(4e-4 / 62_500, 15);
    expect(lrAt(official, 31_250)).toBeCloseTo(2e-4, 15);
    expect(lrAt(official, 62_499)).toBeCloseTo((4e-4 * 62_499) / 62_500, 15);
  });

  it('follows end + (base - end) * 0.5 * (1 + cos(pi * progress)) after warmup', () => {
    expect(lrAt(official, 62_500)).toBeCloseTo(4e-4, 15); // progress 0
    // progress 0.5 (step 156,250): midpoint (base + end) / 2
    expect(lrAt(official, 156_250)).toBeCloseTo((4e-4 + 1e-5) / 2, 15);
    // progress 0.25 (step 109,375)
    expect(lrAt(official, 109_375)).toBeCloseTo(1e-5 + 3.9e-4 * 0.5 * (1 + Math.cos(Math.PI / 4)), 15);
    expect(lrAt(official, 250_000)).toBeCloseTo(1e-5, 15); // progress 1: end_lr
    // Past the end (never trained) the official cosine is not clamped: it rises again.
    expect(lrAt(official, 300_000)).toBeCloseTo(1e-5 + 3.9e-4 * 0.5 * (1 + Math.cos(Math.PI * (237_500 / 187_500))), 15);
    // monotone after warmup
    let prev = Infinity;
    for (let s = 62_500; s <= 250_000; s += 997) {
      const v = lrAt(official, s);
      expect(v).toBeLessThanOrEqual(prev);
      prev = v;
    }
  });

  it('constant and constant_with_warmup: warmup then flat (the official "constant")', () => {
    const c = { ...official, scheduler: 'constant' as const, warmupSteps: 10 };
    expect(lrAt(c, 0)).toBe(0);
    expect(lrAt(c, 5)).toBeCloseTo(2e-4, 15);
    expect(lrAt(c, 10)).toBe(4e-4);
    expect(lrAt(c, 200_000)).toBe(4e-4);
    const cw = { ...c, scheduler: 'constant_with_warmup' as const };
    for (const s of [0, 3, 10, 99_999]) expect(lrAt(cw, s)).toBe(lrAt(c, s));
    const flat = { ...c, warmupSteps: 0 };
    expect(lrAt(flat, 0)).toBe(4e-4);
  });

  it("equals the official trainer's lr at every update (torch AdamW + get_scheduler, lr-official.json)", () => {
    let worst = 0;
    for (const k of OFFICIAL_LR) {
      const cfg = buildTrainConfig('', [
        `lr_scheduler.scheduler=${k.scheduler}`,
        `optimizer.params.learning_rate=${k.optimizer_lr}`,
        `lr_scheduler.params.learning_rate=${k.learning_rate}`,
        `lr_scheduler.params.end_lr=${k.end_lr}`,
        `lr_scheduler.params.warmup_steps=${k.warmup_steps}`,
        `training.max_train_steps=${k.max_train_steps}`,
      ]).config;
      const sch = lrScheduleOf(cfg);
      k.steps.forEach((step, i) => {
        const e = relErr(lrAt(sch, step), k.lr[i]!);
        worst = Math.max(worst, e);
        expect(e, `${k.name} step ${step}`).toBeLessThan(1e-15);
      });
    }
    console.log(`lr vs the official scheduler: max relative error ${worst.toExponential(2)}`);
    // Rates set differently (O 4e-4, B 1e-3): the whole cosine is O / B = 0.4 times the
    // B = O = 1e-3 one, not E + (O - E) * ratio.
    const diff = OFFICIAL_LR.find((k) => k.name === 'different')!;
    const equal = OFFICIAL_LR.find((k) => k.name === 'equal')!;
    for (let s = 5; s < 20; s++) expect(relErr(diff.lr[s]!, 0.4 * equal.lr[s]!)).toBeLessThan(1e-15);
    const ratio = 0.5 * (1 + Math.cos((Math.PI * 14) / 15));
    expect(relErr(diff.lr[19]!, 1e-5 + (4e-4 - 1e-5) * ratio)).toBeGreaterThan(0.3);
  });

  it('rejects bad steps', () => {
    expect(() => lrAt(official, -1)).toThrow(/step >= 0/);
    expect(() => lrAt(official, 1.5)).toThrow(/step >= 0/);
  });
});

describe('randomness ratio r(step)', () => {
  const r = randomnessScheduleOf(buildTrainConfig('').config); // 125,000 .. 187,500

  it('is 1 before the anneal start, 0 from its end, linear in between', () => {
    expect(randomRatioAt(r, 0)).toBe(1);
    expect(randomRatioAt(r, 124_999)).toBe(1);
    expect(randomRatioAt(r, 125_000)).toBe(1);
    expect(randomRatioAt(r, 140_625)).toBeCloseTo(0.75, 12);
    expect(randomRatioAt(r, 156_250)).toBeCloseTo(0.5, 12);
    expect(randomRatioAt(r, 187_499)).toBeCloseTo(1 / 62_500, 12);
    expect(randomRatioAt(r, 187_500)).toBe(0);
    expect(randomRatioAt(r, 250_000)).toBe(0);
  });

  it('start == end switches at that step', () => {
    const s = { annealStart: 10, annealEnd: 10 };
    expect(randomRatioAt(s, 9)).toBe(1);
    expect(randomRatioAt(s, 10)).toBe(0);
  });
});
