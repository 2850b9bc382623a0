// rargen fid REF.npz SAMPLE.npz: OpenAI's ADM evaluator (FID, sFID, Inception Score,
// precision, recall), natively. See lib/fid.ts.
import { evaluateNpzOnRanks, type EvaluateProgress, type EvaluateResult } from '../fid.js';
import { Dist } from '../dist.js';
import { findInceptionWeights } from '../inception.js';
import { resolveModelPath } from '../releases.js';
import type { DeviceSpec } from '../device.js';
import { DeviceSpecSchema } from '../device.js';
import { ProgressBar } from '../progress.js';
import { intOption, note, parseCommandArgs, UsageError, helpShown, STRING, BOOLEAN, RUN_OPTIONS } from './_shared.js';

export const summary = "FID, sFID, Inception Score, precision and recall of two .npz image batches (ADM's evaluator)";

const USAGE = `Usage: rargen fid REF.npz SAMPLE.npz [options]

Evaluates SAMPLE.npz against REF.npz as OpenAI's ADM evaluator
(guided-diffusion evaluations/evaluator.py) does, with the same TF1-exact
InceptionV3. Each .npz holds arr_0 = uint8 images (N, H, W, 3) of any size; a
reference batch may also hold mu, sigma, mu_s, sigma_s (ADM's
VIRTUAL_imagenet256_labeled.npz does), which are then used for FID and sFID.
Images are read in batches, so 50,000-image files are fine.

Under mpirun (mpirun -np N rargen fid REF.npz SAMPLE.npz ...) the Inception
passes are split over the ranks (batch b on rank b % N, cuda:LOCAL_RANK for
--device auto or cuda) and rank 0 gathers the features and prints the result:
the same numbers as one process with the same --batch-size.

Options:
  --inception FILE   Inception weights (default: the cache folder, filled by
                     'rargen download inception')
  --device D         auto, cpu, cuda or cuda:N (default auto)
  --batch-size N     images per Inception batch (default 32)
  --threads N        CPU threads (default: all)
  --split-size N     Inception Score split size (default 5000, as ADM)
  --json             print {"fid","sfid","inception_score","precision","recall"}
  -h, --help         show this help`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { inception: STRING, threads: STRING, 'split-size': STRING, json: BOOLEAN, ...RUN_OPTIONS });
  if (helpShown(values, USAGE)) return 0;
  if (positionals.length !== 2) throw new UsageError(`expected two .npz files (REF.npz SAMPLE.npz) but received ${positionals.length}`);
  // REF may be the downloaded ADM reference batch by name: adm-ref
  const refPath = resolveModelPath(positionals[0]!);
  const samplePath = positionals[1]!;
  const device = values.device ?? 'auto';
  if (!DeviceSpecSchema.safeParse(device).success) throw new UsageError(`--device expects auto, cpu, cuda or cuda:N but received ${JSON.stringify(device)}`);
  const batchSize = intOption(values['batch-size'], '--batch-size', 1);
  const threads = intOption(values.threads, '--threads', 0);
  const splitSize = intOption(values['split-size'], '--split-size', 1);
  const inception = findInceptionWeights(values.inception);

  const labels: Record<EvaluateProgress['stage'], string> = {
    reference: 'reference images',
    sample: 'sample images',
    statistics: 'FID/sFID/IS',
    'precision-recall': 'precision/recall',
  };
  let bar: ProgressBar | undefined;
  let stage: EvaluateProgress['stage'] | undefined;
  const onProgress = (p: EvaluateProgress) => {
    if (p.stage !== stage) {
      bar?.finish();
      stage = p.stage;
      bar = new ProgressBar(p.total, { label: labels[p.stage], unit: p.stage === 'reference' || p.stage === 'sample' ? 'img' : 'step' });
    }
    bar!.update(p.done, p.total);
  };
  const dist = Dist.fromEnv(); // N ranks under mpirun, else one process
  const r = await evaluateNpzOnRanks(
    refPath,
    samplePath,
    { inception, device: dist.device(device as DeviceSpec), batchSize, threads, splitSize, onProgress: dist.isRoot ? onProgress : undefined },
    dist,
  );
  bar?.finish();
  dist.finalize(); // after a clean end only: a rank that throws exits, and mpirun stops the others
  if (!r) return 0; // ranks other than 0: their features went to rank 0
  note(`rargen fid: ${r.referenceImages} reference and ${r.sampleImages} sample images on ${r.device}${dist.size > 1 ? ` and ${dist.size - 1} more rank${dist.size > 2 ? 's' : ''}` : ''}${r.referenceStatsFromFile ? ' (reference statistics from the file)' : ''}`);
  process.stdout.write(formatResult(r, values.json === true));
  return 0;
}

/** The output: ADM's five lines (its order), or one JSON object with --json. */
export function formatResult(r: Pick<EvaluateResult, 'fid' | 'sfid' | 'inceptionScore' | 'precision' | 'recall'>, json: boolean): string {
  if (json) return JSON.stringify({ fid: r.fid, sfid: r.sfid, inception_score: r.inceptionScore, precision: r.precision, recall: r.recall }) + '\n';
  return [`Inception Score: ${r.inceptionScore}`, `FID: ${r.fid}`, `sFID: ${r.sfid}`, `Precision: ${r.precision}`, `Recall: ${r.recall}`].join('\n') + '\n';
}
