// Learning-rate and randomness schedules of RAR training, as functions of the
// optimizer step (0-based: step s is the (s+1)-th update; its lr is lrAt(s)).
//
// LR, exactly as the official trainer makes it (1d-tokenizer utils/train_utils.py and
// utils/lr_schedulers.py): AdamW is created with lr = optimizer.params.learning_rate (O),
// and a LambdaLR, stepped once per update, multiplies it by a factor computed from
// lr_scheduler.params.learning_rate (B) and end_lr (E), with W warmup and T total steps:
// - warmup: factor(s) = s / max(1, W) for s < W (so step 0 trains with lr 0);
// - cosine: factor(s) = (E + (B - E) * ratio) / B, ratio = max(0, 0.5 * (1 + cos(pi * p))),
//   p = (s - W) / max(1, T - W) (not clamped: the trainer never reaches s >= T);
// - constant: the official "constant" is a constant schedule WITH warmup
//   (get_constant_schedule_with_warmup): factor 1 after warmup, so `constant` and
//   `constant_with_warmup` are the same schedule here; set warmup_steps=0 for a flat lr.
// lr(s) = O * factor(s). With B = O (rar.yaml interpolates B from O) the cosine runs
// from O down to E; when a config sets them differently it runs from O down to O * E / B,
// as the official code does. (The official trainer multiplies W and T by the number of
// processes and steps the scheduler that many times per update: the same factors.)
// Randomness ratio r(s) (the probability that a sample is trained in a random
// permutation instead of raster order): 1 before randomness_anneal_start, 0 from
// randomness_anneal_end on, linear in between.
import type { SchedulerName, TrainConfig } from './config.js';

export interface LrSchedule {
  scheduler: SchedulerName;
  /** optimizer.params.learning_rate: the optimizer's lr, which the factor multiplies. */
  optimizerLr: number;
  /** lr_scheduler.params.learning_rate: the `base_lr` of the factor. */
  baseLr: number;
  endLr: number;
  warmupSteps: number;
  totalSteps: number;
}

export function lrScheduleOf(c: TrainConfig): LrSchedule {
  return {
    scheduler: c.lr_scheduler.scheduler,
    optimizerLr: c.optimizer.params.learning_rate,
    baseLr: c.lr_scheduler.params.learning_rate,
    endLr: c.lr_scheduler.params.end_lr,
    warmupSteps: c.lr_scheduler.params.warmup_steps,
    totalSteps: c.training.max_train_steps,
  };
}

/** LambdaLR's factor at optimizer step `step` (0-based). */
export function lrFactorAt(s: LrSchedule, step: number): number {
  if (!Number.isInteger(step) || step < 0) throw new RangeError(`lrAt: expected a step >= 0 but received ${step}`);
  if (step < s.warmupSteps) return step / Math.max(1, s.warmupSteps);
  if (s.scheduler !== 'cosine') return 1;
  const progress = (step - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps);
  const ratio = Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
  return (s.endLr + (s.baseLr - s.endLr) * ratio) / s.baseLr;
}

/** The learning rate that optimizer step `step` (0-based) uses: the optimizer's lr times the factor. */
export function lrAt(s: LrSchedule, step: number): number {
  return s.optimizerLr * lrFactorAt(s, step);
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
