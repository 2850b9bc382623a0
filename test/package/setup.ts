// Shared setup for the package tests: `npm pack` the checkout, install the tarball
// into an empty folder with a PATH holding only node, npm and sh (no g++, cc, make,
// cmake, nvcc, python), and hand back that app folder and its environment.
//
// The tarball needs a prebuilt addon under prebuilds/<platform>-<arch> (without one,
// the install would try node-gyp, which fails with no compiler). When the checkout has
// one (`npm run prebuild`, as CI makes it) the tarball ships it as is. When it has none,
// as in a fresh clone after `npm install`, the tarball is staged in a temporary folder
// with the addon this checkout itself loads (node-gyp-build's choice: build/Release)
// copied in as the prebuilt binary; the checkout is never written to.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'vitest';

export const root = resolve(__dirname, '..', '..');
export const platformDir = `${process.platform}-${process.arch}`;
const prebuilt = join(root, 'prebuilds', platformDir);

function which(cmd: string): string {
  return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim();
}

export interface InstalledApp {
  /** Temporary folder holding everything (removed by cleanup()). */
  work: string;
  /** The app folder with node_modules/rargen installed from the tarball. */
  app: string;
  /** PATH with node, npm, npx and sh only. */
  env: NodeJS.ProcessEnv;
  /** Where the prebuilt binary came from: 'prebuilds' or the staged addon's path. */
  prebuiltFrom: string;
  cleanup(): void;
}

/** Packs the checkout (with a prebuilt addon, staged when missing) and returns the tarball's path. */
export function packTarball(work: string): { tarball: string; prebuiltFrom: string } {
  if (!existsSync(join(root, 'dist', 'lib', 'index.js'))) {
    throw new Error('dist/lib/index.js missing: run `npm install` (its prepare script builds it) or `npm run build:ts`');
  }
  const pack = (cwd: string, dest: string) =>
    join(dest, JSON.parse(execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', dest, '--json'], { cwd, encoding: 'utf8' }))[0].filename as string);
  const tarball = pack(root, work);
  if (existsSync(prebuilt) && readdirSync(prebuilt).some((f) => f.endsWith('.node'))) return { tarball, prebuiltFrom: 'prebuilds' };

  // No prebuilt binary in the checkout: stage one from the addon this checkout loads.
  const gyp = createRequire(join(root, 'package.json'))('node-gyp-build') as { path(dir: string): string };
  let addon: string;
  try {
    addon = gyp.path(root);
  } catch (e) {
    throw new Error(`no prebuilt addon under ${prebuilt} and no built addon to stage (${(e as Error).message.split('\n')[0]}): run \`npm install\` or \`npm run prebuild\``);
  }
  const stage = join(work, 'stage');
  mkdirSync(stage);
  execFileSync('tar', ['-xzf', tarball, '-C', stage]);
  rmSync(tarball);
  const pkg = join(stage, 'package');
  mkdirSync(join(pkg, 'prebuilds', platformDir), { recursive: true });
  copyFileSync(addon, join(pkg, 'prebuilds', platformDir, 'rargen.node'));
  const staged = pack(pkg, work);
  rmSync(stage, { recursive: true, force: true });
  return { tarball: staged, prebuiltFrom: addon };
}

/** Packs and installs rargen into an empty app folder with no toolchain on PATH. */
export function installPackedApp(prefix = 'rargen-pack-'): InstalledApp {
  const work = mkdtempSync(join(tmpdir(), prefix));
  try {
    const { tarball, prebuiltFrom } = packTarball(work);
    const bin = join(work, 'bin');
    mkdirSync(bin);
    for (const tool of ['node', 'npm', 'npx', 'sh']) symlinkSync(which(tool), join(bin, tool));
    const env: NodeJS.ProcessEnv = {
      HOME: process.env.HOME,
      PATH: bin,
      npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? work, '.npm'),
    };
    for (const tool of ['g++', 'gcc', 'cc', 'c++', 'make', 'cmake', 'nvcc', 'python3']) {
      expect(() => execFileSync('sh', ['-c', `command -v ${tool}`], { env })).toThrow();
    }
    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: app, env, stdio: 'pipe' });
    return { work, app, env, prebuiltFrom, cleanup: () => rmSync(work, { recursive: true, force: true }) };
  } catch (e) {
    rmSync(work, { recursive: true, force: true });
    throw e;
  }
}
