// The released files rargen uses: where they are published, their names for
// `rargen download NAME` and `--generator NAME`, and the cache folder they go to
// ($RARGEN_CACHE, else ~/.cache/rargen). A leaf module (no rargen imports but errors.ts)
// so that the loaders can resolve names without an import cycle; the downloader is
// download.ts.
//
// Integrity: no publisher of these files states a sha256 or a byte size (the Hugging
// Face model cards, the torch-fidelity and pytorch-fid releases, OpenAI's evaluator
// README), so none is recorded; the entries have room for them and download.ts checks
// them when present. Without them a download is checked against the length the server
// sends and then opened and checked for what it must hold.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { NotDownloadedError } from './errors.js';

/** Where torch-fidelity publishes the converted TF Inception weights (its URL_INCEPTION_V3). */
export const INCEPTION_WEIGHTS_URL = 'https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth';
export const INCEPTION_WEIGHTS_FILE = 'weights-inception-2015-12-05-6726825d.pth';
/** pytorch-fid's copy of the same weights (FID_WEIGHTS_URL there); accepted in the cache too. */
export const INCEPTION_WEIGHTS_ALT_URL = 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth';
export const INCEPTION_WEIGHTS_ALT_FILE = 'pt_inception-2015-12-05-6726825d.pth';

/** The cache folder: $RARGEN_CACHE, else ~/.cache/rargen. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const c = env.RARGEN_CACHE;
  return c && c.length > 0 ? resolve(c) : join(homedir(), '.cache', 'rargen');
}

export type ReleasedKind = 'generator' | 'tokenizer' | 'inception' | 'reference-batch';

/** One released file. */
export interface ReleasedFile {
  /** The name for `rargen download NAME` and `--generator NAME`. */
  name: string;
  /** Other names accepted for it (the file name, the official model name). */
  aliases: readonly string[];
  kind: ReleasedKind;
  /** File name in the cache folder. */
  file: string;
  /** Where it is published; tried in order. */
  urls: readonly string[];
  describe: string;
  /** Size in bytes, where a public source states it. */
  size?: number;
  /** Hex sha256, where a public source states it. */
  sha256?: string;
}

const HF = 'https://huggingface.co';

/** Every file rargen can download, in `rargen download --help` order. */
export const RELEASED_FILES: readonly ReleasedFile[] = Object.freeze([
  ...(['b', 'l', 'xl', 'xxl'] as const).map(
    (s): ReleasedFile => ({
      name: `rar-${s}`,
      aliases: [`rar_${s}`, `rar_${s}.bin`],
      kind: 'generator',
      file: `rar_${s}.bin`,
      urls: [`${HF}/yucornetto/RAR/resolve/main/rar_${s}.bin`],
      describe: `RAR-${s.toUpperCase()} generator (yucornetto/RAR on Hugging Face)`,
    }),
  ),
  {
    name: 'maskgit-vqgan',
    aliases: ['tokenizer', 'maskgit-vqgan-imagenet-f16-256', 'maskgit-vqgan-imagenet-f16-256.bin'],
    kind: 'tokenizer',
    file: 'maskgit-vqgan-imagenet-f16-256.bin',
    urls: [`${HF}/fun-research/TiTok/resolve/main/maskgit-vqgan-imagenet-f16-256.bin`],
    describe: 'MaskGIT-VQGAN tokenizer (fun-research/TiTok on Hugging Face)',
  },
  {
    name: 'inception',
    aliases: [INCEPTION_WEIGHTS_FILE],
    kind: 'inception',
    file: INCEPTION_WEIGHTS_FILE,
    urls: [INCEPTION_WEIGHTS_URL, INCEPTION_WEIGHTS_ALT_URL],
    describe: 'TF1 InceptionV3 weights for rargen fid (torch-fidelity release)',
  },
  {
    name: 'adm-ref',
    aliases: ['VIRTUAL_imagenet256_labeled', 'VIRTUAL_imagenet256_labeled.npz', 'imagenet256-ref'],
    kind: 'reference-batch',
    file: 'VIRTUAL_imagenet256_labeled.npz',
    urls: ['https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/VIRTUAL_imagenet256_labeled.npz'],
    describe: "ADM's ImageNet 256x256 FID reference batch (OpenAI guided-diffusion)",
  },
]);

/** The released file called `name` (or one of its aliases), else undefined. */
export function findReleasedFile(name: string): ReleasedFile | undefined {
  const n = name.trim().toLowerCase();
  return RELEASED_FILES.find((f) => f.name === n || f.aliases.some((a) => a.toLowerCase() === n));
}

/** Where `file` lives (or will live) in the cache folder. */
export function cachedPath(file: ReleasedFile, env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheDir(env), file.file);
}

/**
 * A model argument as a path: an existing file is itself; a released file's name
 * ('rar-b', 'maskgit-vqgan') is its path in the cache folder, and a NotDownloadedError
 * saying which command fetches it when it is not there yet. Anything else is returned
 * as given (the loader then reports the missing file).
 */
export function resolveModelPath(pathOrName: string, env: NodeJS.ProcessEnv = process.env): string {
  if (existsSync(pathOrName)) return pathOrName;
  const f = findReleasedFile(pathOrName);
  if (!f || /[\\/]/.test(pathOrName)) return pathOrName;
  const p = cachedPath(f, env);
  if (!existsSync(p)) throw new NotDownloadedError(`${f.name} is not downloaded yet (looked for ${p}): run \`npx rargen download ${f.name}\``, f.file, p);
  return p;
}

/** The URL actually fetched: RARGEN_DOWNLOAD_BASE=B maps https://H/P to B/H/P. */
export function mirroredUrl(url: string, env: NodeJS.ProcessEnv = process.env): string {
  const base = env.RARGEN_DOWNLOAD_BASE;
  if (!base) return url;
  const u = new URL(url);
  return `${base.replace(/\/+$/, '')}/${u.host}${u.pathname}${u.search}`;
}

