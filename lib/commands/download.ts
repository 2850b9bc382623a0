// rargen download WHAT: fetches files rargen needs into the cache folder
// ($RARGEN_CACHE, else ~/.cache/rargen). Written under a temporary name, checked, then
// renamed into place, so an interrupted download never leaves a half file behind.
import { mkdir, rename, unlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { AtomicFile, writeFully } from '../io/file.js';
import { openCheckpoint } from '../io/index.js';
import { cacheDir, checkInceptionCheckpoint, INCEPTION_WEIGHTS_ALT_URL, INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL } from '../inception.js';
import { ProgressBar } from '../progress.js';
import { note, parseCommandArgs, UsageError } from './_shared.js';

export const summary = 'download the FID Inception weights into the cache folder';

interface Target {
  describe: string;
  urls: string[];
  file: string;
  /** Throws when the downloaded file is not what it should be. */
  check(path: string): Promise<void>;
}

const TARGETS: Record<string, Target> = {
  inception: {
    describe: 'TF1 InceptionV3 weights for rargen fid (torch-fidelity, 96 MB)',
    urls: [INCEPTION_WEIGHTS_URL, INCEPTION_WEIGHTS_ALT_URL],
    file: INCEPTION_WEIGHTS_FILE,
    async check(path) {
      const ckpt = await openCheckpoint(path);
      try {
        checkInceptionCheckpoint(ckpt, path);
      } finally {
        await ckpt.close();
      }
    },
  },
};

const USAGE = `Usage: rargen download WHAT [options]

Downloads into the cache folder ($RARGEN_CACHE, else ~/.cache/rargen).

What:
${Object.entries(TARGETS)
  .map(([k, t]) => `  ${k.padEnd(10)} ${t.describe}\n  ${''.padEnd(10)} ${t.urls[0]}`)
  .join('\n')}

Options:
  --out FILE   write here instead of the cache folder
  --url URL    download from this URL (a mirror) instead
  --force      download again even if the file exists
  -h, --help   show this help`;

async function fetchTo(url: string, dest: string): Promise<void> {
  const res = await fetch(url, { redirect: 'follow' });
  if (!res.ok || !res.body) throw new Error(`GET ${url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get('content-length') ?? 0);
  const out = await AtomicFile.create(dest);
  const bar = new ProgressBar(total || 1, { label: 'download', unit: 'MB' });
  let done = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      await writeFully(out.fh, chunk, done);
      done += chunk.byteLength;
      if (total) bar.update(Math.round(done / 1e6), Math.round(total / 1e6));
    }
    bar.finish();
    if (total && done !== total) throw new Error(`GET ${url}: received ${done} of ${total} bytes`);
    await out.commit();
  } catch (e) {
    bar.finish();
    await out.abort();
    throw e;
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { out: { type: 'string' }, url: { type: 'string' }, force: { type: 'boolean' } });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`expected what to download (${Object.keys(TARGETS).join(', ')})`);
  const what = positionals[0]!;
  const target = TARGETS[what];
  if (!target) throw new UsageError(`unknown download ${JSON.stringify(what)} (known: ${Object.keys(TARGETS).join(', ')})`);
  const dest = values.out ? resolve(values.out) : join(cacheDir(), target.file);
  if (existsSync(dest) && !values.force) {
    note(`rargen download: ${dest} already exists (use --force to download again)`);
    return 0;
  }
  await mkdir(dirname(dest), { recursive: true });
  const errors: string[] = [];
  for (const url of values.url ? [values.url] : target.urls) {
    note(`rargen download: ${url}`);
    try {
      // download next to the destination, check, then move into place
      const tmp = dest + '.partial';
      await fetchTo(url, tmp);
      try {
        await target.check(tmp);
      } catch (e) {
        await unlink(tmp).catch(() => undefined);
        throw e;
      }
      await rename(tmp, dest);
      note(`rargen download: saved ${dest}`);
      return 0;
    } catch (e) {
      errors.push(`${url}: ${(e as Error).message}`);
    }
  }
  throw new Error(`could not download ${what}:\n  ${errors.join('\n  ')}\nDownload one of the URLs by hand and save it as ${dest}`);
}
