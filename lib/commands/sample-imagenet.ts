// rargen sample-imagenet: the 50-per-class sample set for FID (lib/sample.ts), resumable
// and shardable. Ctrl-C (or SIGTERM) stops after the batch being written; running the
// same command again continues.
import { loadGenerator, loadTokenizer, type Generator, type Tokenizer } from '../generate.js';
import { PRESET_NAMES } from '../config.js';
import { formatProgress, ProgressBar } from '../progress.js';
import { parseShard, sampleImageNet, sampleLayout, type SampleProgress } from '../sample.js';
import { Dist } from '../dist.js';
import { intOption, note as noteAll, parseClassList, parseCommandArgs, requireOption, UsageError, deviceOption, MODEL_OPTIONS, SAMPLING_OPTIONS, modelOptions, samplingOptions } from './_shared.js';

export const summary = 'sample the FID image set (50 per class) to PNGs and one .npz; resumable, shardable';

const USAGE = `Usage: rargen sample-imagenet --generator FILE --tokenizer FILE --out OUT [options]

Samples --num-per-class images for each class (default 50 for each of the
generator's classes: 50,000 for the released checkpoints) with the preset's
guidance, power and temperature, as the paper's FID numbers were measured.
Image g = class position * num-per-class + j (class-major) depends only on
(seed, g): batch size, shards and restarts do not change it.

Files:
  OUT/images/000000.png ...      the images (R x R, R = the tokenizer's resolution)
  OUT/run.json                   the settings; resuming with other settings is refused
  OUT/progress/shard-I-of-N.json which images each shard has written
  OUT.npz                        arr_0 (num, R, R, 3) uint8 and labels (num,) int64,
                                 written when every image exists (for rargen fid)

Killed at any point, the same command continues where it stopped.

Options:
  --generator FILE      RAR checkpoint (rar_b.bin, ...) or a downloaded name (rar-b, ...)
  --tokenizer FILE      MaskGIT-VQGAN checkpoint (maskgit-vqgan-imagenet-f16-256.bin)
  --out OUT             run folder (created); the .npz goes to OUT.npz
  --npz FILE            write the .npz here instead of OUT.npz
  --preset NAME         ${PRESET_NAMES.join(', ')}; must match the weights (default: inferred)
  --num-per-class N     images per class (default 50)
  --classes LIST        a subset of classes, e.g. 0-9 or 1,5,7 (default: all)
  --guidance-scale G    CFG scale (default: the preset's)
  --guidance-pow P      power of the CFG schedule (default: the preset's)
  --temperature T       softmax temperature (default: the preset's)
  --top-k K             (default 0 = off; the paper uses none)
  --top-p P             (default 1 = off)
  --seed S              64-bit seed (default 0)
  --batch-size N        images per batch (default 128 on CUDA, 32 on CPU)
  --device D            auto, cpu, cuda or cuda:N (default auto)
  --precision P         f32, f16 or bf16 weights (default f32, as the paper)
  --shard I/N           generate only shard I of N (contiguous blocks of images);
                        run one process per GPU (--device cuda:I) or machine. The
                        last shard to finish writes the .npz; shards run in other
                        folders are joined with rargen merge-samples. Under mpirun
                        (mpirun -np N rargen sample-imagenet ...) each rank takes
                        shard RANK/N by itself (and cuda:LOCAL_RANK for --device
                        cuda), and rank 0 writes the .npz once every rank is done.
  --no-merge            do not write the .npz at the end
  -h, --help            show this help`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(
    argv,
    {
      ...MODEL_OPTIONS,
      ...SAMPLING_OPTIONS,
      out: { type: 'string' },
      npz: { type: 'string' },
      'num-per-class': { type: 'string' },
      classes: { type: 'string' },
      'batch-size': { type: 'string' },
      shard: { type: 'string' },
      'no-merge': { type: 'boolean' },
    },
    false,
  );
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const generatorPath = requireOption(values.generator, '--generator');
  const tokenizerPath = requireOption(values.tokenizer, '--tokenizer');
  const out = requireOption(values.out, '--out');
  if (/\.npz$/i.test(out)) throw new UsageError(`--out is the run folder (the .npz goes to OUT.npz, or to --npz FILE) but received ${JSON.stringify(out)}`);
  const { preset, precision } = modelOptions(values);
  let shard;
  try {
    shard = values.shard === undefined ? undefined : parseShard(values.shard);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const dist = Dist.fromEnv(); // N ranks under mpirun, else one process
  const ranked = dist.size > 1;
  if (ranked && shard)
    throw new UsageError(`--shard is set by mpirun (this is rank ${dist.rank} of ${dist.size}, so shard ${dist.rank}/${dist.size}): drop --shard, or run without mpirun`);
  if (ranked) shard = { index: dist.rank, count: dist.size };
  const device = ranked ? dist.device(deviceOption(values.device) ?? 'auto') : deviceOption(values.device);
  // under mpirun rank 0 alone reports progress; every rank prints its summary line
  const note = dist.isRoot ? noteAll : () => {};
  const tag = ranked ? ` (rank ${dist.rank} of ${dist.size})` : '';
  const opts = {
    numPerClass: intOption(values['num-per-class'], '--num-per-class', 1),
    classes: values.classes === undefined ? undefined : parseClassList(values.classes),
    ...samplingOptions(values),
    batchSize: intOption(values['batch-size'], '--batch-size', 1),
    shard,
    npz: values.npz,
    // under mpirun the .npz is written by rank 0 after every rank is done (below)
    merge: values['no-merge'] || ranked ? false : undefined,
  };

  let generator: Generator | undefined;
  let tokenizer: Tokenizer | undefined;
  const controller = new AbortController();
  let stops = 0;
  const onSignal = () => {
    if (++stops > 1) process.exit(130); // a second Ctrl-C: now (everything on disk is consistent)
    note('rargen sample-imagenet: stopping after the batch being written (Ctrl-C again to stop now)');
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const loadBar = new ProgressBar(0, { label: 'loading generator', unit: 'tensors', enabled: dist.isRoot ? undefined : false });
    generator = await loadGenerator(generatorPath, {
      preset,
      device,
      precision,
      onProgress: (p) => loadBar.update(p.tensorsDone, p.tensorsTotal),
    });
    loadBar.finish();
    const tokBar = new ProgressBar(0, { label: 'loading tokenizer', unit: 'tensors', enabled: dist.isRoot ? undefined : false });
    tokenizer = await loadTokenizer(tokenizerPath, { device, onProgress: (p) => tokBar.update(p.tensorsDone, p.tensorsTotal) });
    tokBar.finish();
    note(`rargen: ${generator.device.reason}`);
    const s = generator.sampling;
    note(
      `rargen sample-imagenet: ${generator.preset?.name ?? 'custom generator'}; guidance ${opts.guidanceScale ?? s.guidanceScale}, pow ${opts.guidanceScalePow ?? s.guidanceScalePow}, ` +
        `temperature ${opts.temperature ?? s.temperature}, seed ${opts.seed ?? 0}${shard ? `, shard ${shard.index}/${shard.count}` : ''}`,
    );

    // Progress: a bar on a terminal, else a line every 30 s (logs of long runs).
    let bar: ProgressBar | undefined;
    let t0 = 0;
    let lastLine = 0;
    const onProgress = (p: SampleProgress) => {
      if (!bar) {
        bar = new ProgressBar(p.toDo, { label: p.alreadyDone ? `sampling (${p.alreadyDone} done before)` : 'sampling', unit: 'img', enabled: dist.isRoot ? undefined : false });
        t0 = performance.now();
      }
      bar.update(Math.min(p.sampled, p.toDo), p.toDo);
      const t = performance.now();
      if (!process.stderr.isTTY && t - lastLine > 30_000 && dist.isRoot) {
        lastLine = t;
        note(formatProgress(p.written, p.toDo, (t - t0) / 1000, { label: 'sampling', unit: 'img' }));
      }
    };
    let mergeBar: ProgressBar | undefined;
    const onMergeProgress = (d: number, t: number) => {
      if (!mergeBar) {
        bar?.finish();
        mergeBar = new ProgressBar(t, { label: 'writing .npz', unit: 'img' });
      }
      mergeBar.update(d, t);
    };
    const started = performance.now();
    let r = await sampleImageNet({
      generator,
      tokenizer,
      out,
      ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
      signal: controller.signal,
      onProgress,
      onNote: (m) => {
        bar?.finish();
        note(`rargen sample-imagenet: ${m}`);
      },
      onMergeProgress,
    });
    bar?.finish();
    const seconds = (performance.now() - started) / 1000;
    const [a, b] = r.range;
    noteAll(
      `rargen sample-imagenet${tag}: images ${a}..${b - 1}${r.shard.count > 1 ? ` (shard ${r.shard.index}/${r.shard.count})` : ''}: ` +
        `${r.alreadyDone} were there, ${r.generated} generated in ${seconds.toFixed(1)} s${r.generated ? ` (${(r.generated / seconds).toFixed(2)} img/s)` : ''}`,
    );
    if (ranked) {
      // Every rank's shard is on disk once all are here (a rank that failed has ended the
      // job); rank 0 then writes the .npz once, with sampleImageNet's own merge step (its
      // shard is complete, so this call generates nothing).
      dist.barrier({ patient: true });
      if (dist.isRoot && !values['no-merge'])
        r = await sampleImageNet({
          generator,
          tokenizer,
          out,
          ...Object.fromEntries(Object.entries({ ...opts, merge: undefined }).filter(([, v]) => v !== undefined)),
          signal: controller.signal,
          onNote: (m) => (m.startsWith('resuming:') ? undefined : note(`rargen sample-imagenet: ${m}`)),
          onMergeProgress,
        });
    }
    mergeBar?.finish();
    if (r.npzComplete) note(`rargen sample-imagenet: ${r.layout.npz} holds all ${r.settings.numImages} images (arr_0 ${r.settings.numImages}x${r.settings.tokenizer.resolution}x${r.settings.tokenizer.resolution}x3 uint8)`);
    else if (r.missing === 0 && values['no-merge']) note(`rargen sample-imagenet: every image exists; write the .npz with rargen merge-samples ${sampleLayout(out).dir}`);
    dist.finalize(); // only after a clean end: a rank that throws exits, and mpirun stops the others
    return 0;
  } catch (e) {
    if ((e as Error).name === 'AbortError') note(`rargen sample-imagenet: stopped; run the same command again to continue`);
    throw e;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    generator?.dispose();
    tokenizer?.dispose();
  }
}
