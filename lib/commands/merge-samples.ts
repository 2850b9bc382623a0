// rargen merge-samples OUT [MORE...]: writes OUT.npz from the PNGs of a sample-imagenet
// run (lib/sample.ts mergeSamples), e.g. after shards ran on several machines.
import { ProgressBar } from '../progress.js';
import { mergeSamples } from '../sample.js';
import { intOption, note, parseCommandArgs, UsageError, helpShown } from './_shared.js';

export const summary = 'write the .npz of a sample-imagenet run from its PNGs (joins shards)';

const USAGE = `Usage: rargen merge-samples OUT [MORE_OUT...] [options]

Writes OUT.npz (arr_0 (num, R, R, 3) uint8 in image order, labels (num,) int64)
from the PNGs of the rargen sample-imagenet run in OUT, once every image exists.
Images are looked up in OUT/images, then in each MORE_OUT/images (folders of
the same run's shards made on other machines; their run.json must match). Each
PNG is checked against the CRC its shard's manifest recorded. The .npz is
written to a temp file and renamed at the end.

Options:
  --npz FILE     write here instead of OUT.npz
  --shards N     the run's shard count: missing images are reported per shard
  -h, --help     show this help`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { npz: { type: 'string' }, shards: { type: 'string' } });
  if (helpShown(values, USAGE)) return 0;
  if (positionals.length < 1) throw new UsageError('expected the run folder OUT (the --out of rargen sample-imagenet)');
  const shards = intOption(values.shards, '--shards', 1);
  const [out, ...sources] = positionals as [string, ...string[]];
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once('SIGINT', onSignal);
  let bar: ProgressBar | undefined;
  try {
    const t0 = performance.now();
    const r = await mergeSamples(out, {
      npz: values.npz,
      sources,
      shards,
      signal: controller.signal,
      onProgress: (d, t) => (bar ??= new ProgressBar(t, { label: 'writing .npz', unit: 'img' })).update(d, t),
    });
    bar?.finish();
    note(`rargen merge-samples: wrote ${r.npz}: arr_0 ${r.numImages}x${r.resolution}x${r.resolution}x3 uint8 in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return 0;
  } finally {
    bar?.finish();
    process.removeListener('SIGINT', onSignal);
  }
}
