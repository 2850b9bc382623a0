// Figures reported in the paper (Yu, He, Deng, Shen, Chen, "Randomized Autoregressive
// Visual Generation", arXiv 2411.00776), for comparing against what rargen measures:
// class-conditional ImageNet 256x256 FID (50,000 samples, ADM's evaluator against
// VIRTUAL_imagenet256_labeled.npz) and the Table 5 sampling throughput (one A100, fp32,
// batch 128, KV cache, VQ decoding included). The FIDs live with the presets
// (lib/config.ts PRESETS, which also hold each model's sampling settings); this file
// lists them per released checkpoint.
import { PRESETS, type PresetName } from './config.js';

export const PAPER_TITLE = 'Randomized Autoregressive Visual Generation';
export const PAPER_ARXIV = '2411.00776';

/** ADM's reference batch for ImageNet 256x256 (what the paper's FIDs are measured against). */
export const REFERENCE_BATCH = 'VIRTUAL_imagenet256_labeled.npz';
/** Samples per FID measurement in the paper: 50 for each of the 1000 classes. */
export const PAPER_NUM_SAMPLES = 50_000;

export interface PaperModel {
  preset: PresetName;
  /** Checkpoint base name: rar_b.bin is sampled into rar_b.npz. */
  checkpoint: string;
  params: string;
  /** FID-50k on ImageNet 256x256. */
  fid: number;
  /** Images per second (Table 5). */
  imagesPerSecond: number;
}

const model = (preset: PresetName, checkpoint: string, imagesPerSecond: number): PaperModel => ({
  preset,
  checkpoint,
  params: PRESETS[preset].params,
  fid: PRESETS[preset].fid,
  imagesPerSecond,
});

/** The released checkpoints, smallest first. */
export const PAPER_MODELS: readonly PaperModel[] = Object.freeze([
  model('rar-b', 'rar_b', 17.0),
  model('rar-l', 'rar_l', 15.0),
  model('rar-xl', 'rar_xl', 8.3),
  model('rar-xxl', 'rar_xxl', 6.4),
]);
