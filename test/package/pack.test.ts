// The published package must install and load on a machine with no compiler, no
// cmake, no nvcc and no GPU: `npm pack`, install the tarball into an empty folder
// with a PATH holding only node, npm and sh, then load the addon from there. The
// addon must come from prebuilds/ (node-gyp would fail without a compiler), and its
// CUDA backend must report itself unavailable with a reason instead of failing.
import { describe, it, expect, beforeAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { installPackedApp, platformDir, type InstalledApp } from './setup.js';

describe('npm pack + install without a toolchain', () => {
  let app = '';
  let env: NodeJS.ProcessEnv = {};

  beforeAll(() => {
    const installed: InstalledApp = installPackedApp();
    ({ app, env } = installed);
    if (installed.prebuiltFrom !== 'prebuilds') console.warn(`pack test: no prebuilds/${platformDir} in the checkout; shipped ${installed.prebuiltFrom} as the prebuilt addon`);
    return installed.cleanup;
  }, 600_000);

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
    expect(res.path).toContain(join('prebuilds', platformDir));
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

  it("ships the serve web page (package.json 'files': lib/serve/page), byte for byte", () => {
    const src = join(import.meta.dirname, '..', '..', 'lib', 'serve', 'page');
    const shipped = join(app, 'node_modules', 'rargen', 'lib', 'serve', 'page');
    const names = readdirSync(src).sort();
    expect(names).toEqual(expect.arrayContaining(['index.html', 'app.js', 'style.css']));
    expect(existsSync(shipped)).toBe(true);
    expect(readdirSync(shipped).sort()).toEqual(names);
    for (const n of names) expect(readFileSync(join(shipped, n)).equals(readFileSync(join(src, n)))).toBe(true);
  });
});
