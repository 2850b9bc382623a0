// Learning-rate and randomness schedules of RAR training, as functions of the
// optimizer step (0-based: step s is the (s+1)-th update; its lr is lrAt(s)).
//
// LR (1d-tokenizer utils/lr_schedulers.py, a LambdaLR stepped once per update):
// - warmup: lr(s) = base * s / W for s < W (so step 0 trains with lr 0);
// - cosine: lr(s) = end + (base - end) * 0.5 * (1 + cos(pi * p)), p = (s - W) / (T - W),
//   clamped so that lr never goes below `end` past T;
// - constant: the official "constant" is a constant schedule WITH warmup
//   (get_constant_schedule_with_warmup), so `constant` and `constant_with_warmup`
//   are the same schedule here; set warmup_steps=0 for a flat lr.
// Randomness ratio r(s) (the probability that a sample is trained in a random
// permutation instead of raster order): 1 before randomness_anneal_start, 0 from
// randomness_anneal_end on, linear in between.
import type { SchedulerName, TrainConfig } from './config.js';

export interface LrSchedule {
  scheduler: SchedulerName;
  baseLr: number;
  endLr: number;
  warmupSteps: number;
  totalSteps: number;
}

export function lrScheduleOf(c: TrainConfig): LrSchedule {
  return {
    scheduler: c.lr_scheduler.scheduler,
    baseLr: c.lr_scheduler.params.learning_rate,
    endLr: c.lr_scheduler.params.end_lr,
    warmupSteps: c.lr_scheduler.params.warmup_steps,
    totalSteps: c.training.max_train_steps,
  };
}

/** The learning rate that optimizer step `step` (0-based) uses. */
export function lrAt(s: LrSchedule, step: number): number {
  if (!Number.isInteger(step) || step < 0) throw new RangeError(`lrAt: expected a step >= 0 but received ${step}`);
  if (step < s.warmupSteps) return (s.baseLr * step) / Math.max(1, s.warmupSteps);
  if (s.scheduler !== 'cosine') return s.baseLr;
  const progress = (step - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps);
  const ratio = Math.max(0, 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
  return s.endLr + (s.baseLr - s.endLr) * ratio;
}

export interface RandomnessSchedule {
  annealStart: number;
  annealEnd: number;
}

export function randomnessScheduleOf(c: TrainConfig): RandomnessSchedule {
  return { annealStart: c.model.generator.randomness_anneal_start, annealEnd: c.model.generator.randomness_anneal_end };
}

/** Probability of a random permutation at optimizer step `step`. */
export function randomRatioAt(s: RandomnessSchedule, step: number): number {
  if (step < s.annealStart) return 1;
  if (step >= s.annealEnd) return 0;
  return 1 - (step - s.annealStart) / (s.annealEnd - s.annealStart);
}
