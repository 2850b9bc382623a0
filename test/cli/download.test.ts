// rargen download and name resolution, against a loopback HTTP server laid out like the
// real hosts (RARGEN_DOWNLOAD_BASE): a full download, resume after a dropped
// connection (Range request, .part kept), a 404, offline (ECONNREFUSED), a file that
// is not the model it should be, a wrong sha256, and `--generator rar-b` from the cache.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run as download } from '../../lib/commands/download.js';
import { run as generateCmd } from '../../lib/commands/generate.js';
import { downloadFile, resolveModelPath, RELEASED_FILES } from '../../lib/download.js';
import { DownloadError, NotDownloadedError } from '../../lib/errors.js';
import { closedPort, startFileServer, type FileServer } from '../helpers/http.js';
import { hasModelAddon } from '../api/helpers.js';

const FIX = join(import.meta.dirname, '..', 'fixtures');
const RAR_B = '/huggingface.co/yucornetto/RAR/resolve/main/rar_b.bin';
const generatorBytes = readFileSync(join(FIX, 'rar-tiny', 'model.bin'));
const tokenizerBytes = readFileSync(join(FIX, 'vqgan-tiny', 'model.bin'));

let server: FileServer;
let cache = '';
let stderr: string[] = [];

beforeAll(async () => {
  server = await startFileServer();
  cache = await mkdtemp(join(tmpdir(), 'rargen-dl-'));
  process.env.RARGEN_CACHE = cache;
  process.env.RARGEN_DOWNLOAD_BASE = server.base;
  process.env.RARGEN_PROGRESS_INTERVAL_MS = '1';
});
afterAll(async () => {
  await server.close();
  await rm(cache, { recursive: true, force: true });
});
afterEach(() => vi.restoreAllMocks());

function captureStderr() {
  stderr = [];
  vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    stderr.push(String(s));
    return true;
  });
}

describe('the manifest', () => {
  it('has every released file at its official location', () => {
    expect(Object.fromEntries(RELEASED_FILES.map((f) => [f.name, f.urls[0]]))).toEqual({
      'rar-b': 'https://huggingface.co/yucornetto/RAR/resolve/main/rar_b.bin',
      'rar-l': 'https://huggingface.co/yucornetto/RAR/resolve/main/rar_l.bin',
      'rar-xl': 'https://huggingface.co/yucornetto/RAR/resolve/main/rar_xl.bin',
      'rar-xxl': 'https://huggingface.co/yucornetto/RAR/resolve/main/rar_xxl.bin',
      'maskgit-vqgan': 'https://huggingface.co/fun-research/TiTok/resolve/main/maskgit-vqgan-imagenet-f16-256.bin',
      inception: 'https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth',
      'adm-ref': 'https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/VIRTUAL_imagenet256_labeled.npz',
    });
  });
});

describe('rargen download (loopback server)', () => {
  it('a generator name before download says which command fetches it', async () => {
    expect(() => resolveModelPath('rar-b')).toThrow(NotDownloadedError);
    expect(() => resolveModelPath('rar-b')).toThrow(`rar-b is not downloaded yet (looked for ${join(cache, 'rar_b.bin')}): run \`npx rargen download rar-b\``);
  });

  it('resumes after a dropped connection with a Range request', async () => {
    server.set(RAR_B, generatorBytes);
    const half = Math.floor(generatorBytes.length / 2);
    server.dropNext(RAR_B, half);
    captureStderr();
    const err = await download(['rar-b']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect((err as DownloadError).reason).toBe('network');
    expect((err as Error).message).toMatch(/^the connection to 127\.0\.0\.1:\d+ (dropped|ended) after .* run the same command again to resume from .*rar_b\.bin\.part$/);
    expect(statSync(join(cache, 'rar_b.bin.part')).size).toBe(half);
    expect(existsSync(join(cache, 'rar_b.bin'))).toBe(false);

    const before = server.requests.length;
    expect(await download(['rar-b'])).toBe(0);
    expect(server.requests.slice(before).map((r) => r.headers.range)).toEqual([`bytes=${half}-`]);
    expect(readFileSync(join(cache, 'rar_b.bin')).equals(generatorBytes)).toBe(true);
    expect(existsSync(join(cache, 'rar_b.bin.part'))).toBe(false);
    const out = stderr.join('');
    expect(out).toContain(`resuming after ${(half / 1e6).toFixed(1)} MB`);
    expect(out).toMatch(/rar-b \[#+\] 100% /); // a progress line (stderr is not a TTY here)
    expect(out).toContain(`saved ${join(cache, 'rar_b.bin')}`);
    // a second run keeps the file
    expect(await download(['rar-b'])).toBe(0);
    expect(stderr.join('')).toContain('already exists (use --force to download again)');
  });

  it.runIf(hasModelAddon())('--generator rar-b then resolves from the cache', async () => {
    captureStderr();
    const tokens = join(cache, 'tokens.json');
    expect(await generateCmd(['--generator', 'rar-b', '--classes', '3', '--tokens-out', tokens, '--device', 'cpu'])).toBe(0);
    expect(JSON.parse(readFileSync(tokens, 'utf8')).classLabels).toEqual([3]);
  });

  it('a 404 names the status and leaves nothing behind', async () => {
    const err = (await download(['rar-l']).catch((e: unknown) => e)) as DownloadError;
    expect(err.message).toBe(`GET ${server.base}/huggingface.co/yucornetto/RAR/resolve/main/rar_l.bin: HTTP 404 Not Found (not found: the file may have moved; see \`rargen download --help\`)`);
    expect(existsSync(join(cache, 'rar_l.bin.part'))).toBe(false);
    expect(existsSync(join(cache, 'rar_l.bin'))).toBe(false);
  });

  it('a file that is not the model it should be is refused and deleted', async () => {
    server.set('/huggingface.co/yucornetto/RAR/resolve/main/rar_xl.bin', tokenizerBytes);
    const err = (await download(['rar-xl']).catch((e: unknown) => e)) as DownloadError;
    expect(err.reason).toBe('content');
    expect(err.message).toMatch(/rar_xl\.bin is not the expected file: it holds a maskgit-vqgan, not a rar-generator; it was deleted$/);
    expect(existsSync(join(cache, 'rar_xl.bin.part'))).toBe(false);
    expect(existsSync(join(cache, 'rar_xl.bin'))).toBe(false);
  });

  it('offline (connection refused) says so and how to get the file by hand', async () => {
    const port = await closedPort();
    const saved = process.env.RARGEN_DOWNLOAD_BASE;
    process.env.RARGEN_DOWNLOAD_BASE = `http://127.0.0.1:${port}`;
    try {
      const err = (await download(['maskgit-vqgan']).catch((e: unknown) => e)) as DownloadError;
      expect(err.reason).toBe('offline');
      expect(err.message).toBe(
        `cannot reach 127.0.0.1:${port} (ECONNREFUSED): check the network connection (offline?), or download http://127.0.0.1:${port}/huggingface.co/fun-research/TiTok/resolve/main/maskgit-vqgan-imagenet-f16-256.bin by hand and save it as ${join(cache, 'maskgit-vqgan-imagenet-f16-256.bin')}`,
      );
    } finally {
      process.env.RARGEN_DOWNLOAD_BASE = saved;
    }
  });

  it('unknown names are usage errors listing the known ones', async () => {
    await expect(download(['rar-m'])).rejects.toThrow('unknown download "rar-m" (known: rar-b, rar-l, rar-xl, rar-xxl, maskgit-vqgan, inception, adm-ref, all)');
  });
});

describe('downloadFile size and sha256 checks', () => {
  const path = '/example.org/f.bin';
  const data = Buffer.from('0123456789abcdef'.repeat(1000));
  const sha = createHash('sha256').update(data).digest('hex');

  it('accepts the right sha256 and size', async () => {
    server.set(path, data);
    const dest = join(cache, 'ok.bin');
    await downloadFile({ url: server.base + path, dest, size: data.length, sha256: sha });
    expect(readFileSync(dest).equals(data)).toBe(true);
  });

  it('refuses a wrong sha256 and deletes the file', async () => {
    const dest = join(cache, 'bad.bin');
    const wrong = '0'.repeat(64);
    const err = (await downloadFile({ url: server.base + path, dest, sha256: wrong }).catch((e: unknown) => e)) as DownloadError;
    expect(err.reason).toBe('sha256');
    expect(err.message).toBe(`${server.base}${path}: sha256 ${sha} does not match the expected ${wrong}; the file was deleted (a corrupted or changed download)`);
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(dest + '.part')).toBe(false);
  });

  it('refuses a size the manifest does not expect', async () => {
    const err = (await downloadFile({ url: server.base + path, dest: join(cache, 'size.bin'), size: 10 }).catch((e: unknown) => e)) as DownloadError;
    expect(err.reason).toBe('size');
    expect(err.message).toContain(`the server sends ${data.length} bytes but the file is 10 bytes`);
  });
});
