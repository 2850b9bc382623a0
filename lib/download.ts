// A resumable downloader for the released files (releases.ts) into the cache folder.
//
// A download is written to FILE.part (resumed with an HTTP Range request when it is
// there), checked (size and sha256 where known, the server's length, and that the file
// holds the model it should), then renamed to FILE, so the cache never holds a half or
// wrong file under its real name. RARGEN_DOWNLOAD_BASE=http://host:port maps every URL
// https://H/P to http://host:port/H/P (a mirror, or a local server in the tests).
export { RELEASED_FILES, findReleasedFile, cachedPath, resolveModelPath, mirroredUrl, type ReleasedFile, type ReleasedKind } from './releases.js';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DownloadError } from './errors.js';
import { checkInceptionCheckpoint } from './inception.js';
import { cachedPath, findReleasedFile, mirroredUrl, RELEASED_FILES, type ReleasedKind } from './releases.js';
import { openCheckpoint } from './io/index.js';
import { detectModelKind } from './config.js';

export interface DownloadProgress {
  /** Bytes in FILE.part so far (resumed bytes included). */
  bytesDone: number;
  /** Total bytes, when the server says. */
  bytesTotal: number | undefined;
  /** Bytes that were already there from an earlier, interrupted run. */
  bytesResumed: number;
}

export interface DownloadFileOptions {
  url: string;
  dest: string;
  /** Expected size in bytes (checked). */
  size?: number;
  /** Expected hex sha256 (checked). */
  sha256?: string;
  /** Throws when the finished file is not what it should be (it is then deleted). */
  check?: (path: string) => Promise<void>;
  onProgress?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
}

const OFFLINE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'ENETDOWN', 'UND_ERR_CONNECT_TIMEOUT']);

function causeCode(e: unknown): string | undefined {
  let c: unknown = e;
  for (let i = 0; i < 4 && c; i++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    c = (c as { cause?: unknown }).cause;
  }
  return undefined;
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

async function hashFile(path: string, hash: ReturnType<typeof createHash>): Promise<void> {
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
}

const mb = (n: number) => (n / 1e6).toFixed(1) + ' MB';

/**
 * Downloads `url` to `dest` through `dest.part`, resuming a part left by an earlier
 * run, and checks size, sha256 and content before renaming it into place. A dropped
 * connection keeps the part (run again to resume); a wrong file is deleted.
 */
export async function downloadFile(o: DownloadFileOptions): Promise<void> {
  const part = o.dest + '.part';
  await mkdir(dirname(o.dest), { recursive: true });
  let have = await sizeOf(part);
  if (o.size !== undefined && have > o.size) {
    await unlink(part);
    have = 0;
  }
  let total: number | undefined = o.size;
  if (!(o.size !== undefined && have === o.size)) {
    const headers: Record<string, string> = {};
    if (have > 0) headers.range = `bytes=${have}-`;
    let res: Response;
    try {
      res = await fetch(o.url, { redirect: 'follow', headers, signal: o.signal });
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw e;
      const code = causeCode(e);
      const host = new URL(o.url).host;
      if (code && OFFLINE_CODES.has(code))
        throw new DownloadError(`cannot reach ${host} (${code}): check the network connection (offline?), or download ${o.url} by hand and save it as ${o.dest}`, 'offline');
      throw new DownloadError(`GET ${o.url} failed: ${code ?? (e as Error).message}`, 'network');
    }
    if (res.status === 416 && have > 0) {
      // The part is already complete (or the server disagrees about it): start over if it does not check out.
      await res.body?.cancel();
    } else {
      if (res.status !== 200 && res.status !== 206) {
        await res.body?.cancel();
        throw new DownloadError(`GET ${o.url}: HTTP ${res.status} ${res.statusText}${res.status === 404 ? ' (not found: the file may have moved; see `rargen download --help`)' : ''}`, 'http');
      }
      let start = 0;
      if (res.status === 206) {
        const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
        if (!m || Number(m[1]) !== have) {
          await res.body?.cancel();
          throw new DownloadError(`GET ${o.url}: the server resumed at the wrong offset (${res.headers.get('content-range')}, wanted ${have})`, 'network');
        }
        start = have;
        if (m[2] !== '*') total = Number(m[2]);
      } else {
        const len = res.headers.get('content-length');
        if (len !== null) total = Number(len);
      }
      if (o.size !== undefined && total !== undefined && total !== o.size) {
        await res.body?.cancel();
        throw new DownloadError(`GET ${o.url}: the server sends ${total} bytes but the file is ${o.size} bytes`, 'size');
      }
      const fh = await open(part, start === 0 ? 'w' : 'a');
      let done = start;
      const resumed = start;
      o.onProgress?.({ bytesDone: done, bytesTotal: total, bytesResumed: resumed });
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          await fh.write(chunk);
          done += chunk.byteLength;
          o.onProgress?.({ bytesDone: done, bytesTotal: total, bytesResumed: resumed });
        }
      } catch (e) {
        if ((e as Error).name === 'AbortError') throw e;
        throw new DownloadError(
          `the connection to ${new URL(o.url).host} dropped after ${mb(done)}${total ? ` of ${mb(total)}` : ''} (${causeCode(e) ?? (e as Error).message}); run the same command again to resume from ${part}`,
          'network',
        );
      } finally {
        await fh.close();
      }
      if (total !== undefined && done < total)
        throw new DownloadError(`the connection to ${new URL(o.url).host} ended after ${mb(done)} of ${mb(total)}; run the same command again to resume from ${part}`, 'network');
    }
  }
  const got = await sizeOf(part);
  const fail = async (msg: string, reason: 'size' | 'sha256' | 'content') => {
    await unlink(part).catch(() => undefined);
    return new DownloadError(msg, reason);
  };
  if (total !== undefined && got !== total) throw await fail(`${o.url}: got ${got} bytes but expected ${total}; the partial file was deleted, run again`, 'size');
  if (o.sha256 !== undefined) {
    const h = createHash('sha256');
    await hashFile(part, h);
    const hex = h.digest('hex');
    if (hex !== o.sha256.toLowerCase()) throw await fail(`${o.url}: sha256 ${hex} does not match the expected ${o.sha256}; the file was deleted (a corrupted or changed download)`, 'sha256');
  }
  if (o.check) {
    try {
      await o.check(part);
    } catch (e) {
      throw await fail(`${o.url} is not the expected file: ${(e as Error).message}; it was deleted`, 'content');
    }
  }
  await rename(part, o.dest);
}

/** Checks that a downloaded file holds what a file of this kind must hold. */
export async function checkReleasedFile(kind: ReleasedKind, path: string): Promise<void> {
  if (kind === 'reference-batch') {
    const fh = await open(path, 'r');
    try {
      const b = Buffer.alloc(4);
      await fh.read(b, 0, 4, 0);
      if (b.readUInt32LE(0) !== 0x04034b50) throw new Error('not an .npz (zip) archive');
    } finally {
      await fh.close();
    }
    return;
  }
  const ckpt = await openCheckpoint(path);
  try {
    if (kind === 'inception') {
      checkInceptionCheckpoint(ckpt, path);
      return;
    }
    const found = detectModelKind(ckpt.tensors);
    const want = kind === 'generator' ? 'rar-generator' : 'maskgit-vqgan';
    if (found !== want) throw new Error(`it holds ${found === 'unknown' ? 'an unknown model' : `a ${found}`}, not a ${want}`);
  } finally {
    await ckpt.close();
  }
}

/**
 * Downloads a released file into the cache folder (or `dest`), trying its URLs in order;
 * resolves to its path. An existing file is kept unless `force`.
 */
export async function downloadReleased(
  name: string,
  opts: { dest?: string; url?: string; force?: boolean; env?: NodeJS.ProcessEnv; onUrl?: (url: string) => void; onProgress?: (p: DownloadProgress) => void; signal?: AbortSignal } = {},
): Promise<{ path: string; downloaded: boolean }> {
  const f = findReleasedFile(name);
  if (!f) throw new DownloadError(`unknown download ${JSON.stringify(name)} (known: ${RELEASED_FILES.map((r) => r.name).join(', ')})`, 'http');
  const env = opts.env ?? process.env;
  const dest = opts.dest ?? cachedPath(f, env);
  if (existsSync(dest) && !opts.force) return { path: dest, downloaded: false };
  const errors: DownloadError[] = [];
  for (const url of opts.url ? [opts.url] : f.urls) {
    const real = mirroredUrl(url, env);
    opts.onUrl?.(real);
    try {
      await downloadFile({ url: real, dest, size: f.size, sha256: f.sha256, check: (p) => checkReleasedFile(f.kind, p), onProgress: opts.onProgress, signal: opts.signal });
      return { path: dest, downloaded: true };
    } catch (e) {
      if (!(e instanceof DownloadError)) throw e;
      // a dropped connection keeps its part: resuming it from another URL would mix files
      if (e.reason === 'network' || e.reason === 'offline') throw e;
      errors.push(e);
    }
  }
  if (errors.length === 1) throw errors[0]!;
  throw new DownloadError(`could not download ${f.name}:\n  ${errors.map((e) => e.message).join('\n  ')}`, errors[errors.length - 1]!.reason);
}
