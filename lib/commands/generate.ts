// rargen generate: sample class-conditional tokens with a RAR generator and, with a
// tokenizer (or the demo's palette), write the images as PNG files (DIR/000000.png, ...
// in class-list order), each batch as soon as it is done, so Ctrl-C keeps what was
// written. Every option is checked, class ids against the model's class count, before
// the model loads.
import { existsSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import { generate, type Generator, type Tokenizer } from '../generate.js';
import { imageGrid, savePng, type RgbImage } from '../image.js';
import { detectModelKind, inferGeneratorConfig, PRESET_NAMES } from '../config.js';
import { openCheckpoint } from '../io/index.js';
import { ProgressBar } from '../progress.js';
import { IMAGENET_CLASSES, className } from '../classes.js';
import { resolveModelPath, findReleasedFile } from '../releases.js';
import { decodeDemoTokens, demoPaths, loadDemoInfo, DEMO_CLASSES } from '../demo/index.js';
import {
  imageFileName,
  intOption,
  note,
  parseClassList,
  parseCommandArgs,
  requireOption,
  UsageError,
  deviceOption,
  type ClassSpace,
  helpShown,
  loadGeneratorWithProgress,
  loadTokenizerWithProgress,
  STRING,
  BOOLEAN,
  RUN_OPTIONS,
  MODEL_OPTIONS,
  SAMPLING_OPTIONS,
  modelOptions,
  samplingOptions,
} from './_shared.js';

export const summary = 'sample images (or tokens) for ImageNet classes (ids or names) with a RAR generator';

const USAGE = `Usage: rargen generate --generator FILE|NAME [--tokenizer FILE|NAME] --classes LIST --out DIR [options]
       rargen generate --demo --classes NAME[,NAME...] --out DIR [options]

Samples the tokens of one image per class in LIST (raster order, KV cache,
classifier-free guidance) and decodes them to PNG images and/or writes them as JSON.

Options:
  --generator FILE|NAME   RAR checkpoint (rar_b.bin, ...; torch or safetensors), or a name
                          downloaded with \`rargen download\`: rar-b, rar-l, rar-xl, rar-xxl
  --tokenizer FILE|NAME   MaskGIT-VQGAN checkpoint, or maskgit-vqgan (the default with a
                          downloaded generator); needed for --out and --grid
  --preset NAME           ${PRESET_NAMES.join(', ')}; must match the weights (default: inferred)
  --classes LIST          class ids, ranges and names: 207,360 or 0-9 or "golden retriever,tabby"
                          (\`rargen classes WORD\` searches the ImageNet names)
  --guidance-scale G      CFG scale (default: the preset's, else 0 = no guidance)
  --guidance-pow P        power of the CFG schedule (default: the preset's, else 0)
  --temperature T         softmax temperature (default: the preset's, else 1)
  --seed S                64-bit seed (default 0); image i depends on (S, i) only
  --greedy                argmax instead of sampling (not with --top-k/--top-p)
  --top-k K               sample among the K most likely tokens (0 = off)
  --top-p P               nucleus sampling, 0 < P <= 1 (1 = off)
  --batch-size N          images per batch (default 32); each batch is written when done
  --device D              auto, cpu, cuda or cuda:N (default auto)
  --precision P           f32, f16 or bf16 weights on the backend (default f32)
  --demo                  the small demo model shipped with rargen (16x16 palette pictures,
                          classes ${DEMO_CLASSES.join(', ')}; no download, works offline)
  --tokens-out FILE.json  write {"classLabels": [...], "tokens": [[...], ...]}
  --out DIR               write DIR/000000.png, DIR/000001.png, ...
  --grid FILE.png         also write all images as one grid picture
  --grid-cols N           images per grid row (default: ceil(sqrt(count)))
  -h, --help              show this help`;

/** The generator's class count and names, read from the checkpoint's index (no weights loaded). */
async function peekClasses(path: string): Promise<ClassSpace> {
  const ckpt = await openCheckpoint(path);
  try {
    const kind = detectModelKind(ckpt.tensors);
    if (kind === 'maskgit-vqgan') throw new UsageError(`--generator ${path} holds a MaskGIT-VQGAN tokenizer, not a RAR generator (pass it as --tokenizer)`);
    if (kind !== 'rar-generator') throw new UsageError(`--generator ${path} holds ${ckpt.tensors.size} tensors of an unknown model, not a RAR generator (\`rargen inspect ${path}\` lists them)`);
    const count = inferGeneratorConfig(ckpt.tensors).numClasses;
    return { count, names: count === IMAGENET_CLASSES.length ? IMAGENET_CLASSES : undefined };
  } finally {
    await ckpt.close();
  }
}

/** A --generator/--tokenizer argument as an existing file (a released name resolves from the cache). */
function modelFile(arg: string, flag: string): string {
  const p = resolveModelPath(arg);
  if (!existsSync(p)) throw new UsageError(`${flag} ${arg}: no such file (a path, or a name from \`rargen download --help\`)`);
  return p;
}

function checkOutDir(dir: string, flag: string): void {
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new UsageError(`${flag} ${dir} is a file, not a folder: give a folder for the PNG images (use --grid FILE.png for one picture)`);
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(
    argv,
    {
      ...MODEL_OPTIONS, ...SAMPLING_OPTIONS, classes: STRING, greedy: BOOLEAN, 'tokens-out': STRING, out: STRING,
      grid: STRING, 'grid-cols': STRING, demo: BOOLEAN, class: STRING, ...RUN_OPTIONS,
    },
    false,
  );
  if (helpShown(values, USAGE)) return 0;
  // --- every option checked before anything loads
  const demo = values.demo === true || values.generator === 'demo';
  if (values.demo && values.generator !== undefined) throw new UsageError('--demo and --generator cannot be used together');
  if (demo && values.tokenizer !== undefined) throw new UsageError('--demo decodes by palette lookup: drop --tokenizer');
  if (values.class !== undefined && values.classes !== undefined) throw new UsageError('pass either --class or --classes, not both');
  const generatorArg = demo ? undefined : requireOption(values.generator, '--generator');
  const classFlag = values.class !== undefined ? '--class' : '--classes';
  const classText = requireOption(values.class ?? values.classes, '--classes');
  const wantImages = values.out !== undefined || values.grid !== undefined;
  if (!wantImages && values['tokens-out'] === undefined) throw new UsageError('nothing to write: pass --out DIR, --grid FILE.png and/or --tokens-out FILE.json');
  if (values.out !== undefined) checkOutDir(values.out, '--out');
  if (values.grid !== undefined && extname(values.grid).toLowerCase() !== '.png') throw new UsageError(`--grid expects a FILE.png but received ${JSON.stringify(values.grid)}`);
  if (values.grid !== undefined && existsSync(values.grid) && statSync(values.grid).isDirectory()) throw new UsageError(`--grid ${values.grid} is a folder: give a FILE.png`);
  const gridCols = intOption(values['grid-cols'], '--grid-cols', 1);
  const { preset, precision } = modelOptions(values);
  if (values.greedy && (values['top-k'] !== undefined || values['top-p'] !== undefined))
    throw new UsageError(`--greedy takes the most likely token: it cannot be combined with ${values['top-k'] !== undefined ? '--top-k' : '--top-p'}`);
  const device = deviceOption(values.device);
  const sampling = { ...samplingOptions(values), greedy: values.greedy };
  const batchSize = intOption(values['batch-size'], '--batch-size', 1) ?? 32;

  const demoInfo = demo ? loadDemoInfo() : undefined;
  let tokenizerArg = values.tokenizer;
  if (!demo && wantImages && tokenizerArg === undefined) {
    if (findReleasedFile(generatorArg!)?.kind === 'generator') tokenizerArg = 'maskgit-vqgan';
    else throw new UsageError(`${values.out !== undefined ? '--out' : '--grid'} needs --tokenizer to decode the tokens to images`);
  }
  const generatorPath = demo ? demoPaths().weights : modelFile(generatorArg!, '--generator');
  const tokenizerPath = !demo && wantImages ? modelFile(tokenizerArg!, '--tokenizer') : undefined;
  const space: ClassSpace = demoInfo ? { count: demoInfo.generator.numClasses, names: demoInfo.classes } : await peekClasses(generatorPath);
  const classes = parseClassList(classText, classFlag, space);

  // --- load and sample, batch by batch
  let generator: Generator | undefined;
  let tokenizer: Tokenizer | undefined;
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  let written = 0;
  try {
    generator = await loadGeneratorWithProgress(generatorPath, {
      preset,
      device,
      precision,
    });
    note(`rargen: ${generator.device.reason}`);
    const c = generator.config;
    const s = generator.sampling;
    note(
      `rargen: generator ${demo ? 'demo' : generator.preset?.name ?? 'custom'} (hidden ${c.hiddenSize}, depth ${c.depth}, ${c.seqLen} tokens); ` +
        `guidance ${sampling.guidanceScale ?? s.guidanceScale}, pow ${sampling.guidanceScalePow ?? s.guidanceScalePow}, temperature ${sampling.temperature ?? s.temperature}`,
    );
    if (tokenizerPath !== undefined) {
      tokenizer = await loadTokenizerWithProgress(tokenizerPath, { device });
    }
    if (values.out !== undefined) await mkdir(values.out, { recursive: true });
    const bar = new ProgressBar(classes.length, { label: 'generating', unit: 'img' });
    const t0 = performance.now();
    const allTokens: Int32Array[] = [];
    const allImages: RgbImage[] = [];
    for (let start = 0; start < classes.length; start += batchSize) {
      const batch = classes.slice(start, start + batchSize);
      const result = await generate({
        generator,
        tokenizer,
        classLabels: batch,
        batchSize,
        indexOffset: start,
        ...Object.fromEntries(Object.entries(sampling).filter(([, v]) => v !== undefined)),
        onProgress: (p) => bar.update(start + p.fraction * batch.length, classes.length),
        signal: controller.signal,
      });
      allTokens.push(...result.tokens);
      const images = demo ? result.tokens.map((t) => decodeDemoTokens(t)) : result.images;
      if (images) {
        if (values.grid !== undefined) allImages.push(...images);
        if (values.out !== undefined) for (let i = 0; i < images.length; i++) await savePng(join(values.out, imageFileName(start + i)), images[i]!);
        written = start + images.length;
      }
    }
    bar.finish();
    const seconds = (performance.now() - t0) / 1000;
    if (values['tokens-out'] !== undefined) {
      const file = values['tokens-out'];
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, JSON.stringify({ classLabels: classes, tokens: allTokens.map((t) => Array.from(t)) }) + '\n');
      note(`rargen: wrote tokens of ${allTokens.length} images to ${file}`);
    }
    const names = generator.classNames ? ` (${[...new Set(classes)].slice(0, 8).map((k) => className(k, generator!.classNames)).join(', ')}${new Set(classes).size > 8 ? ', ...' : ''})` : '';
    if (values.out !== undefined) note(`rargen: wrote ${written} images${names} to ${values.out}`);
    if (values.grid !== undefined) {
      await mkdir(dirname(values.grid), { recursive: true });
      await savePng(values.grid, imageGrid(allImages, gridCols ?? Math.ceil(Math.sqrt(allImages.length)), { padding: 2 }));
      note(`rargen: wrote a grid of ${allImages.length} images to ${values.grid}`);
    }
    note(`rargen: ${classes.length} images in ${seconds.toFixed(1)} s (${(classes.length / seconds).toFixed(2)} img/s)`);
    return 0;
  } catch (e) {
    if ((e as Error).name === 'AbortError' && values.out !== undefined && written > 0) note(`rargen generate: interrupted; the ${written} images written to ${values.out} are kept`);
    throw e;
  } finally {
    process.removeListener('SIGINT', onSigint);
    generator?.dispose();
    tokenizer?.dispose();
  }
}
