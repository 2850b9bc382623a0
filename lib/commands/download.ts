// rargen download NAME...: fetches released files (generators, tokenizer, FID Inception
// weights, ADM reference batch; lib/releases.ts) into the cache folder ($RARGEN_CACHE,
// else ~/.cache/rargen). Resumable: an interrupted download leaves NAME.part, which the
// next run continues with an HTTP Range request; a file is renamed into place only once
// it checks out.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { downloadReleased } from '../download.js';
import { cacheDir, cachedPath, RELEASED_FILES } from '../releases.js';
import { ProgressBar } from '../progress.js';
import { note, parseCommandArgs, UsageError, helpShown } from './_shared.js';

export const summary = 'download released weights (rar-b ... rar-xxl, maskgit-vqgan, inception, adm-ref) into the cache folder';

function usage(): string {
  return `Usage: rargen download NAME... [options]

Downloads into the cache folder (${cacheDir()}; set $RARGEN_CACHE to move it).
An interrupted download resumes where it stopped when run again.

Names:
${RELEASED_FILES.map((f) => `  ${f.name.padEnd(14)} ${f.describe}${existsSync(cachedPath(f)) ? ' [downloaded]' : ''}\n  ${''.padEnd(14)} ${f.urls[0]}`).join('\n')}

Then use the name instead of a path: rargen generate --generator rar-b --tokenizer maskgit-vqgan ...

Options:
  --out FILE   write here instead of the cache folder (one NAME only)
  --url URL    download from this URL (a mirror) instead (one NAME only)
  --force      download again even if the file exists
  -h, --help   show this help

Environment: RARGEN_CACHE (the cache folder), RARGEN_DOWNLOAD_BASE=URL (fetch
https://HOST/PATH from URL/HOST/PATH instead, e.g. a local mirror).`;
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { out: { type: 'string' }, url: { type: 'string' }, force: { type: 'boolean' } });
  if (helpShown(values, usage())) return 0;
  if (positionals.length === 0) throw new UsageError(`expected what to download (${RELEASED_FILES.map((f) => f.name).join(', ')})`);
  if (positionals.length > 1 && (values.out !== undefined || values.url !== undefined)) throw new UsageError('--out and --url take one NAME');
  const names = positionals.includes('all') ? RELEASED_FILES.map((f) => f.name) : positionals;
  for (const name of names) {
    if (!RELEASED_FILES.some((f) => f.name === name || f.aliases.includes(name)))
      throw new UsageError(`unknown download ${JSON.stringify(name)} (known: ${RELEASED_FILES.map((f) => f.name).join(', ')}, all)`);
  }
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    for (const name of names) {
      let bar: ProgressBar | undefined;
      const r = await downloadReleased(name, {
        dest: values.out !== undefined ? resolve(values.out) : undefined,
        url: values.url,
        force: values.force,
        signal: controller.signal,
        onUrl: (url) => note(`rargen download: ${name} from ${url}`),
        onProgress: (p) => {
          if (!bar) {
            if (p.bytesResumed > 0) note(`rargen download: resuming after ${(p.bytesResumed / 1e6).toFixed(1)} MB`);
            bar = new ProgressBar(p.bytesTotal ? p.bytesTotal / 1e6 : 0, { label: name, unit: 'MB' });
          }
          bar.update(p.bytesDone / 1e6, p.bytesTotal ? p.bytesTotal / 1e6 : 0);
        },
      }).finally(() => bar?.finish());
      note(r.downloaded ? `rargen download: saved ${r.path}` : `rargen download: ${r.path} already exists (use --force to download again)`);
    }
    return 0;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}
