// rargen generate: sample class-conditional tokens with a RAR generator and,
// with a tokenizer, write the images as PNG files (DIR/000000.png, ... in class-list
// order). Ctrl-C cancels the running batch.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { loadGenerator, loadTokenizer, generate, type Generator, type Tokenizer } from '../generate.js';
import { savePng } from '../image.js';
import { PRESET_NAMES, type PresetName } from '../config.js';
import { ProgressBar } from '../progress.js';
import { demoClassIndex, decodeDemoTokens, demoPaths, loadDemoInfo, DEMO_CLASSES } from '../demo/index.js';
import {
  imageFileName,
  intOption,
  note,
  numberOption,
  parseClassList,
  parseCommandArgs,
  requireOption,
  seedOption,
  UsageError,
  deviceOption,
} from './_shared.js';

export const summary = 'sample images (or tokens) for class ids with a RAR generator';

const USAGE = `Usage: rargen generate --generator FILE [--tokenizer FILE] --classes 207,360 [options]
       rargen generate --demo --class NAME[,NAME...] --out DIR [options]

Samples N tokens per class id (raster order, KV cache, classifier-free guidance) and
writes them as JSON and/or decodes them to PNG images.

Options:
  --generator FILE        RAR checkpoint (rar_b.bin, rar_l.bin, ...; torch or safetensors)
  --tokenizer FILE        MaskGIT-VQGAN checkpoint; needed for --out
  --preset NAME           ${PRESET_NAMES.join(', ')}; must match the weights (default: inferred)
  --classes LIST          class ids, e.g. 207,360 or 0-9 (one image each)
  --guidance-scale G      CFG scale (default: the preset's, else 0 = no guidance)
  --guidance-pow P        power of the CFG schedule (default: the preset's, else 0)
  --temperature T         softmax temperature (default: the preset's, else 1)
  --seed S                64-bit seed (default 0); image i depends on (S, i) only
  --greedy                argmax instead of sampling
  --top-k K               sample among the K most likely tokens (0 = off)
  --top-p P               nucleus sampling, 0 < P <= 1 (1 = off)
  --batch-size N          images per batch (default 32)
  --device D              auto, cpu, cuda or cuda:N (default auto)
  --precision P           f32, f16 or bf16 weights on the backend (default f32)
  --demo                  use the small demo model shipped with rargen (16x16 palette pictures,
                          decoded by palette lookup; no tokenizer needed; works offline)
  --class NAMES           demo class names: ${DEMO_CLASSES.join(', ')} (or --classes with ids)
  --tokens-out FILE.json  write {"classLabels": [...], "tokens": [[...], ...]}
  --out DIR               write DIR/000000.png, DIR/000001.png, ...
  -h, --help              show this help`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    {
      generator: { type: 'string' },
      tokenizer: { type: 'string' },
      preset: { type: 'string' },
      classes: { type: 'string' },
      'guidance-scale': { type: 'string' },
      'guidance-pow': { type: 'string' },
      temperature: { type: 'string' },
      seed: { type: 'string' },
      greedy: { type: 'boolean' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      precision: { type: 'string' },
      'tokens-out': { type: 'string' },
      out: { type: 'string' },
      demo: { type: 'boolean' },
      class: { type: 'string' },
    },
    false,
  );
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  void positionals;
  const demo = values.demo === true;
  if (demo && values.generator !== undefined) throw new UsageError('--demo and --generator cannot be used together');
  if (demo && values.tokenizer !== undefined) throw new UsageError('--demo decodes by palette lookup: drop --tokenizer');
  if (!demo && values.class !== undefined) throw new UsageError('--class NAME is for the demo model (--demo); use --classes with class ids');
  const demoInfo = demo ? loadDemoInfo() : undefined;
  const generatorPath = demo ? demoPaths().weights : requireOption(values.generator, '--generator');
  let classes: number[];
  if (demo && values.class !== undefined) {
    if (values.classes !== undefined) throw new UsageError('pass either --class NAMES or --classes IDS, not both');
    classes = values.class.split(',').map((name) => {
      try {
        return demoClassIndex(name.trim());
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    });
  } else {
    classes = parseClassList(requireOption(values.classes, demo ? '--class' : '--classes'));
  }
  if (values.out === undefined && values['tokens-out'] === undefined) throw new UsageError('nothing to write: pass --out DIR and/or --tokens-out FILE.json');
  if (!demo && values.out !== undefined && values.tokenizer === undefined) throw new UsageError('--out needs --tokenizer to decode the tokens to images');
  if (values.preset !== undefined && !(PRESET_NAMES as readonly string[]).includes(values.preset))
    throw new UsageError(`--preset expects one of ${PRESET_NAMES.join(', ')} but received ${JSON.stringify(values.preset)}`);
  if (values.precision !== undefined && !['f32', 'f16', 'bf16'].includes(values.precision))
    throw new UsageError(`--precision expects one of f32, f16, bf16 but received ${JSON.stringify(values.precision)}`);
  const device = deviceOption(values.device);
  const sampling = {
    guidanceScale: numberOption(values['guidance-scale'], '--guidance-scale') ?? demoInfo?.sampling.guidanceScale,
    guidanceScalePow: numberOption(values['guidance-pow'], '--guidance-pow') ?? demoInfo?.sampling.guidanceScalePow,
    temperature: numberOption(values.temperature, '--temperature') ?? demoInfo?.sampling.temperature,
    topK: intOption(values['top-k'], '--top-k', 0),
    topP: numberOption(values['top-p'], '--top-p'),
    seed: seedOption(values.seed),
    batchSize: intOption(values['batch-size'], '--batch-size', 1),
    greedy: values.greedy,
  };

  let generator: Generator | undefined;
  let tokenizer: Tokenizer | undefined;
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    const loadBar = new ProgressBar(0, { label: 'loading generator', unit: 'tensors' });
    generator = await loadGenerator(generatorPath, {
      preset: values.preset as PresetName | undefined,
      device,
      precision: values.precision as 'f32' | 'f16' | 'bf16' | undefined,
      onProgress: (p) => loadBar.update(p.tensorsDone, p.tensorsTotal),
    });
    loadBar.finish();
    note(`rargen: ${generator.device.reason}`);
    const c = generator.config;
    const s = generator.sampling;
    note(
      `rargen: generator ${demo ? 'demo' : generator.preset?.name ?? 'custom'} (hidden ${c.hiddenSize}, depth ${c.depth}, ${c.seqLen} tokens); ` +
        `guidance ${sampling.guidanceScale ?? s.guidanceScale}, pow ${sampling.guidanceScalePow ?? s.guidanceScalePow}, temperature ${sampling.temperature ?? s.temperature}`,
    );
    if (values.out !== undefined && !demo) {
      const tokBar = new ProgressBar(0, { label: 'loading tokenizer', unit: 'tensors' });
      tokenizer = await loadTokenizer(values.tokenizer!, { device, onProgress: (p) => tokBar.update(p.tensorsDone, p.tensorsTotal) });
      tokBar.finish();
    }
    const bar = new ProgressBar(classes.length, { label: 'generating', unit: 'img' });
    const t0 = performance.now();
    const result = await generate({
      generator,
      tokenizer,
      classLabels: classes,
      ...Object.fromEntries(Object.entries(sampling).filter(([, v]) => v !== undefined)),
      onProgress: (p) => bar.update(p.fraction * p.imagesTotal, p.imagesTotal),
      signal: controller.signal,
    });
    bar.finish();
    const seconds = (performance.now() - t0) / 1000;
    if (values['tokens-out'] !== undefined) {
      const file = values['tokens-out'];
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, JSON.stringify({ classLabels: result.classLabels, tokens: result.tokens.map((t) => Array.from(t)) }) + '\n');
      note(`rargen: wrote tokens of ${result.tokens.length} images to ${file}`);
    }
    if (values.out !== undefined && demo) {
      await mkdir(values.out, { recursive: true });
      for (let i = 0; i < result.tokens.length; i++) await savePng(join(values.out, imageFileName(i)), decodeDemoTokens(result.tokens[i]!));
      note(`rargen: wrote ${result.tokens.length} demo images (${classes.map((c) => DEMO_CLASSES[c]).join(', ')}) to ${values.out}`);
    } else if (values.out !== undefined && result.images) {
      await mkdir(values.out, { recursive: true });
      for (let i = 0; i < result.images.length; i++) await savePng(join(values.out, imageFileName(i)), result.images[i]!);
      note(`rargen: wrote ${result.images.length} images to ${values.out}`);
    }
    note(`rargen: ${classes.length} images in ${seconds.toFixed(1)} s (${(classes.length / seconds).toFixed(2)} img/s)`);
    return 0;
  } finally {
    process.removeListener('SIGINT', onSigint);
    generator?.dispose();
    tokenizer?.dispose();
  }
}
