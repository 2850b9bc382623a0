// rargen tokenize: an ImageFolder-style tree (DIR/<class>/.../*.png|jpg) -> the
// official pretokenized JSON lines {"class_id": int, "tokens": [256 ints]}, the
// training data of RAR. Class ids follow torchvision's ImageFolder (class folders
// sorted by name) unless a class map is given; images are center-cropped as ADM does
// (box-filter halving, bicubic resize, centre crop) to the tokenizer's resolution, or,
// with --ten-crop, ten-cropped as the official --ten_crop made RAR's training data.
import { readdir, readFile, stat, mkdir } from 'node:fs/promises';
import { dirname, join, extname } from 'node:path';
import { AtomicFile, writeFully } from '../io/file.js';
import { loadTokenizer, encode } from '../generate.js';
import { centerCropArr, flipHorizontal, loadImage, tenCropArr, type RgbImage } from '../image.js';
import { ProgressBar } from '../progress.js';
import { note, parseCommandArgs, requireOption, UsageError, helpShown, runOptions, STRING, BOOLEAN, RUN_OPTIONS } from './_shared.js';

export const summary = 'encode an image folder to pretokenized JSONL ({"class_id", "tokens"}) for training';

const USAGE = `Usage: rargen tokenize --tokenizer FILE --images DIR --out FILE.jsonl [options]

Encodes every PNG/JPEG under DIR/<class>/ (nested folders included) with the
MaskGIT-VQGAN tokenizer and writes one line per image:
  {"class_id": 3, "tokens": [256 ints]}
Class ids: class folders sorted by name get 0, 1, 2, ... (torchvision ImageFolder), or
as --class-map says. Images are center-cropped like ADM/RAR's pretokenization.

Options:
  --tokenizer FILE   MaskGIT-VQGAN checkpoint
  --images DIR       folder of class folders
  --out FILE.jsonl   output file, replaced only when every image is encoded (written
                     to a temporary file beside it and renamed; a failed or
                     interrupted run leaves an existing FILE untouched)
  --class-map FILE   JSON: {"<folder>": id, ...} or ["<folder for 0>", "<folder for 1>", ...]
  --flip             also write each image's horizontal flip (the official script's default mode),
                     in its order: each batch's images, then their flips (--batch-size is its
                     --batch_size, 128 there)
  --ten-crop         ten lines per image, as the official script's --ten_crop: ADM center crop to
                     int(1.1 * resolution), then torchvision TenCrop(resolution): top-left,
                     top-right, bottom-left, bottom-right, centre, then the same five of the
                     horizontal flip. This is how RAR's training data (maskgitvq.jsonl) was made.
  --skip-bad         skip images that cannot be read or decoded (reported, with a
                     count at the end) instead of stopping at the first one
  --batch-size N     images per batch (default 16)
  --device D         auto, cpu, cuda or cuda:N (default auto)
  -h, --help         show this help`;

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg']);
const OTHER_IMAGE_EXT = new Set(['.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp']);

/** Python's string order (code points), not the locale's. */
function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface Sample {
  path: string;
  classId: number;
}

/** Folder name -> class id from a map file (object or array). */
export async function readClassMap(file: string): Promise<Map<string, number>> {
  let v: unknown;
  try {
    v = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`--class-map ${file}: ${(e as Error).message}`);
  }
  const m = new Map<string, number>();
  if (Array.isArray(v)) v.forEach((name, i) => m.set(String(name), i));
  else if (v && typeof v === 'object') {
    for (const [k, id] of Object.entries(v)) {
      if (!Number.isSafeInteger(id) || (id as number) < 0) throw new UsageError(`--class-map ${file}: expected a non-negative integer for "${k}" but received ${JSON.stringify(id)}`);
      m.set(k, id as number);
    }
  } else throw new UsageError(`--class-map ${file}: expected a JSON object or array`);
  return m;
}

async function walk(dir: string, out: [string, string[]][]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  const files: string[] = [];
  const dirs: string[] = [];
  for (const e of entries) {
    if (e.isDirectory()) dirs.push(e.name);
    else if (e.isFile()) files.push(e.name);
    else if (e.isSymbolicLink()) {
      const s = await stat(join(dir, e.name)).catch(() => undefined);
      if (s?.isDirectory()) dirs.push(e.name);
      else if (s?.isFile()) files.push(e.name);
    }
  }
  out.push([dir, files]);
  for (const d of dirs) await walk(join(dir, d), out);
}

/**
 * The samples of an ImageFolder tree in torchvision's order: classes sorted, then
 * sorted(os.walk(class dir)) roots, then sorted file names.
 */
export async function listImageFolder(root: string, classMap?: Map<string, number>): Promise<{ samples: Sample[]; classes: string[]; skipped: number }> {
  let entries;
  try {
    entries = await readdir(root, { withFileTypes: true });
  } catch (e) {
    throw new UsageError(`--images ${root}: ${(e as Error).message}`);
  }
  const classes: string[] = [];
  for (const e of entries) {
    if (e.isDirectory() || (e.isSymbolicLink() && (await stat(join(root, e.name)).catch(() => undefined))?.isDirectory())) classes.push(e.name);
  }
  classes.sort(byCodePoint);
  if (classes.length === 0) throw new UsageError(`--images ${root}: no class folders (expected DIR/<class>/<image>)`);
  const samples: Sample[] = [];
  let skipped = 0;
  for (let ci = 0; ci < classes.length; ci++) {
    const name = classes[ci]!;
    let id = ci;
    if (classMap) {
      const m = classMap.get(name);
      if (m === undefined) throw new UsageError(`--class-map has no id for the class folder ${JSON.stringify(name)}`);
      id = m;
    }
    const tree: [string, string[]][] = [];
    await walk(join(root, name), tree);
    tree.sort((a, b) => byCodePoint(a[0], b[0]));
    for (const [dir, files] of tree) {
      for (const f of files.sort(byCodePoint)) {
        const ext = extname(f).toLowerCase();
        if (IMAGE_EXT.has(ext)) samples.push({ path: join(dir, f), classId: id });
        else if (OTHER_IMAGE_EXT.has(ext)) skipped++;
      }
    }
  }
  return { samples, classes, skipped };
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(
    argv,
    {
      tokenizer: STRING, images: STRING, out: STRING, 'class-map': STRING,
      flip: BOOLEAN, 'ten-crop': BOOLEAN, 'skip-bad': BOOLEAN, ...RUN_OPTIONS,
    },
    false,
  );
  if (helpShown(values, USAGE)) return 0;
  const tokenizerPath = requireOption(values.tokenizer, '--tokenizer');
  const imagesDir = requireOption(values.images, '--images');
  const outFile = requireOption(values.out, '--out');
  const { batchSize, device } = runOptions(values, 16);
  if (values.flip && values['ten-crop']) throw new UsageError('--flip and --ten-crop: --ten-crop already writes the flipped crops; pass one of them');
  /** The crops of one image, each one output line, in the official script's order (--flip's flips come after the batch). */
  const crops = (img: RgbImage, R: number): RgbImage[] => (values['ten-crop'] ? tenCropArr(img, R) : [centerCropArr(img, R)]);
  const perImage = values['ten-crop'] ? 10 : values.flip ? 2 : 1;
  const classMap = values['class-map'] !== undefined ? await readClassMap(values['class-map']) : undefined;
  const { samples, classes, skipped } = await listImageFolder(imagesDir, classMap);
  if (samples.length === 0) throw new UsageError(`--images ${imagesDir}: no PNG or JPEG images under its ${classes.length} class folders`);
  if (skipped) note(`rargen: skipping ${skipped} images in formats other than PNG/JPEG`);
  const tokenizer = await loadTokenizer(tokenizerPath, { device });
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  await mkdir(dirname(outFile), { recursive: true });
  const out = await AtomicFile.create(outFile);
  let pos = 0;
  let committed = false;
  const write = async (s: string) => {
    const b = Buffer.from(s, 'utf8');
    await writeFully(out.fh, b, pos);
    pos += b.length;
  };
  const bad: string[] = [];
  try {
    note(`rargen: ${tokenizer.device.reason}; ${samples.length} images in ${classes.length} classes`);
    const R = tokenizer.resolution;
    const bar = new ProgressBar(samples.length, { label: 'tokenizing', unit: 'img' });
    for (let s = 0; s < samples.length; s += batchSize) {
      const batch = samples.slice(s, s + batchSize);
      const images: RgbImage[] = [];
      const ids: number[] = [];
      for (const sample of batch) {
        let loaded: RgbImage;
        try {
          loaded = await loadImage(sample.path);
        } catch (e) {
          const msg = (e as Error).message;
          const why = msg.includes(sample.path) ? msg : `${sample.path}: ${msg}`;
          if (!values['skip-bad']) throw new Error(`${why} (${outFile} is left as it was; pass --skip-bad to skip unreadable images)`, { cause: e });
          note(`rargen: skipping ${why}`);
          bad.push(sample.path);
          continue;
        }
        for (const img of crops(loaded, R)) {
          images.push(img);
          ids.push(sample.classId);
        }
      }
      if (images.length === 0) continue;
      if (values.flip) {
        // pretokenization.py: torch.cat([samples, torch.flip(samples, dims=[-1])]), targets likewise
        const n = images.length;
        for (let i = 0; i < n; i++) {
          images.push(flipHorizontal(images[i]!));
          ids.push(ids[i]!);
        }
      }
      const tokens = await encode(tokenizer, images, { batchSize: images.length, signal: controller.signal });
      let lines = '';
      for (let i = 0; i < tokens.length; i++) lines += JSON.stringify({ class_id: ids[i], tokens: Array.from(tokens[i]!) }) + '\n';
      await write(lines);
      bar.update(s + batch.length);
    }
    bar.finish();
    if (bad.length === samples.length) throw new Error(`none of the ${samples.length} images could be read; ${outFile} is left as it was`);
    await out.commit(true);
    committed = true;
    const good = samples.length - bad.length;
    if (bad.length) note(`rargen: skipped ${bad.length} of ${samples.length} images that could not be read (listed above)`);
    note(`rargen: wrote ${good * perImage} lines to ${outFile}`);
    return 0;
  } finally {
    process.removeListener('SIGINT', onSigint);
    if (!committed) await out.abort();
    tokenizer.dispose();
  }
}
