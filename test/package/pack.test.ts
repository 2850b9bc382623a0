// The published package must install and load on a machine with no compiler, no
// cmake, no nvcc and no GPU: `npm pack`, install the tarball into an empty folder
// with a PATH holding only node, npm and sh, then load the addon from there. The
// addon must come from prebuilds/ (node-gyp would fail without a compiler), and its
// CUDA backend must report itself unavailable with a reason instead of failing.
import { describe, it, expect, beforeAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readdirSync, symlinkSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(__dirname, '..', '..');
const prebuilt = join(root, 'prebuilds', `${process.platform}-${process.arch}`);

function which(cmd: string): string {
  return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim();
}

describe('npm pack + install without a toolchain', () => {
  let work = '';
  let app = '';
  let env: NodeJS.ProcessEnv = {};

  beforeAll(() => {
    if (!existsSync(prebuilt) || readdirSync(prebuilt).length === 0) {
      throw new Error(`no prebuilt addon under ${prebuilt}: run \`npm run prebuild\` first`);
    }
    if (!existsSync(join(root, 'dist', 'lib', 'index.js'))) {
      throw new Error('dist/lib/index.js missing: run `npm run build:ts` first');
    }
    work = mkdtempSync(join(tmpdir(), 'rargen-pack-'));
    const out = execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', work, '--json'], {
      cwd: root,
      encoding: 'utf8',
    });
    const tarball = join(work, JSON.parse(out)[0].filename as string);
    // A bin folder with node, npm and sh only: no g++, cc, make, cmake, nvcc, python.
    const bin = join(work, 'bin');
    mkdirSync(bin);
    for (const tool of ['node', 'npm', 'sh']) symlinkSync(which(tool), join(bin, tool));
    env = { HOME: process.env.HOME, PATH: bin, npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? work, '.npm') };
    for (const tool of ['g++', 'gcc', 'cc', 'c++', 'make', 'cmake', 'nvcc', 'python3']) {
      expect(() => execFileSync('sh', ['-c', `command -v ${tool}`], { env })).toThrow();
    }
    app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: app, env, stdio: 'pipe' });
    return () => rmSync(work, { recursive: true, force: true });
  }, 300_000);

  it('loads the prebuilt addon, which reports CUDA unavailable with a reason', () => {
    const script = `
      import { createRequire } from 'node:module';
      const require = createRequire(import.meta.url);
      const dir = require('node:path').dirname(require.resolve('rargen/package.json'));
      const gyp = require('node-gyp-build');
      const addon = gyp(dir);
      const lib = await import('rargen');
      console.log(JSON.stringify({ path: gyp.path(dir), build: addon.buildInfo(), cuda: addon.cudaStatus(), exports: Object.keys(lib).length }));
    `;
    const res = JSON.parse(execFileSync('node', ['--input-type=module', '-e', script], { cwd: app, env, encoding: 'utf8' }));
    expect(res.path).toContain(join('prebuilds', `${process.platform}-${process.arch}`));
    expect(existsSync(join(app, 'node_modules', 'rargen', 'build'))).toBe(false); // nothing was compiled
    expect(res.exports).toBeGreaterThan(0);
    expect(res.build.arch).toBe('x64');
    if (res.build.cuda) {
      // The CUDA-enabled prebuild on a machine without a GPU or driver.
      expect(res.cuda.built).toBe(true);
      if (!res.cuda.available) expect(res.cuda.reason).toMatch(/driver|device|CUDA/i);
    } else {
      expect(res.cuda.reason).toMatch(/without CUDA/);
    }
  });
});
