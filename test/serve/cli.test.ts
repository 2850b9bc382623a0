// `rargen serve` as users run it: the TypeScript compiled into a private folder
// (build-serve-test/, ignored by git) and spawned with node. Usage errors exit 2
// before anything loads; `--demo --port 0` serves; SIGTERM during a request lets it
// finish (200, byte-equal to generate()), refuses new work, and exits 0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadGenerator, type Generator } from '../../lib/generate.js';
import { hasModelAddon } from '../api/helpers.js';
import { http, post } from './helpers.js';
import { reference } from './demo-server.js';

const ROOT = join(import.meta.dirname, '..', '..');
const OUT = join(ROOT, 'build-serve-test');
const CLI = join(OUT, 'lib', 'cli.js');

function rargen(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `rargen serve ARGS`; resolves with the process and its URL once it listens. */
function serve(...args: string[]): Promise<{ proc: ChildProcess; url: string; stderr: () => string; exit: Promise<number | null> }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [CLI, 'serve', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const exit = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
    proc.stderr!.on('data', (d) => (err += d));
    proc.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ proc, url: m[1]!, stderr: () => err, exit });
    });
    void exit.then((code) => reject(new Error(`rargen serve exited ${code} before listening: ${err}`)));
  });
}

beforeAll(() => {
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json'), '--outDir', OUT], { cwd: ROOT, stdio: 'pipe' });
  } catch {
    /* type errors still emit; the CLI must exist */
  }
  if (!existsSync(CLI)) throw new Error('tsc did not produce build-serve-test/lib/cli.js');
});

describe('rargen serve (CLI)', () => {
  it('--help, and usage errors exit 2 naming the flag', () => {
    const h = rargen('serve', '--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('POST /v1/images');
    expect(rargen('--help').stdout).toMatch(/serve\s+serve image generation over HTTP/);
    for (const [args, msg] of [
      [[], /--generator is required/],
      [['--demo', '--port', '70000'], /--port expects an integer between 0 and 65535/],
      [['--demo', '--port', 'x'], /--port expects a number/],
      [['--demo', '--max-batch', '0'], /--max-batch expects an integer >= 1/],
      [['--demo', '--timeout', '0'], /--timeout expects a number of seconds > 0/],
      [['--demo', '--max-images', '300'], /--max-images 300 exceeds --max-queue 256/],
      [['--demo', '--tokenizer', 'x'], /drop --tokenizer/],
      [['--generator', 'no-such.bin', '--tokenizer', 'x'], /--generator no-such.bin: no such file/],
      [['--demo', '--bogus'], /Unknown option '--bogus'/],
    ] as const) {
      const r = rargen('serve', ...args);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(msg);
    }
  });

  describe.skipIf(!hasModelAddon())('serving the demo model', () => {
    let gen: Generator;
    beforeAll(async () => {
      gen = await loadGenerator('demo', { device: 'cpu' });
    });
    afterAll(() => gen?.dispose());

    it('SIGTERM finishes the request in flight, then exits 0', async () => {
      const s = await serve('--demo', '--port', '0', '--max-batch', '4');
      try {
        expect(new URL(s.url).hostname).toBe('127.0.0.1');
        expect((await http(s.url, '/healthz')).json().status).toBe('ok');
        const inflight = post(s.url, { classes: [1, 2, 3, 4, 5, 6, 7, 8], seed: 2 });
        await new Promise((r) => setTimeout(r, 150));
        s.proc.kill('SIGTERM');
        const r = await inflight;
        expect(r.status).toBe(200);
        const ref = await reference(gen, [1, 2, 3, 4, 5, 6, 7, 8], { seed: 2 });
        r.json().images.forEach((img: { png: string }, k: number) => expect(Buffer.from(img.png, 'base64').equals(ref.pngs[k]!)).toBe(true));
        expect(await s.exit).toBe(0);
        expect(s.stderr()).toMatch(/SIGTERM: finishing 1 request/);
        expect(s.stderr()).toContain('rargen serve: stopped');
        await expect(http(s.url, '/healthz')).rejects.toThrow(/ECONNREFUSED/);
      } finally {
        s.proc.kill('SIGKILL');
      }
    });

    it('SIGTERM past --shutdown-grace cancels what is left and still exits 0', async () => {
      const s = await serve('--demo', '--port', '0', '--max-batch', '1', '--shutdown-grace', '0.2');
      try {
        const inflight = post(s.url, { classes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], seed: 1 });
        await new Promise((r) => setTimeout(r, 100));
        s.proc.kill('SIGTERM');
        const r = await inflight;
        expect(r.status).toBe(503);
        expect(r.json().error.code).toBe('shutting_down');
        expect(await s.exit).toBe(0);
      } finally {
        s.proc.kill('SIGKILL');
      }
    });

    it('a port in use is a usage error', async () => {
      const s = await serve('--demo', '--port', '0');
      try {
        const r = rargen('serve', '--demo', '--port', new URL(s.url).port);
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(/is in use/);
      } finally {
        s.proc.kill('SIGTERM');
        expect(await s.exit).toBe(0);
      }
    });
  });
});
