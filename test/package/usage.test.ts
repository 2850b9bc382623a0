// What a user does right after `npm install rargen`, in the packed install with no
// compiler on PATH (shared setup: ./setup.ts): download a released file (from a
// loopback server laid out like the real hosts), generate with class names, write a
// grid, use a downloaded generator by name, require() the package from CommonJS, import
// 'rargen/demo', and compile a strict TypeScript file against the .d.ts files with the
// newest TypeScript.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { installPackedApp, root, type InstalledApp } from './setup.js';
import { startFileServer, type FileServer } from '../helpers/http.js';

const run = promisify(execFile);
let installed: InstalledApp;
let server: FileServer;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  installed = installPackedApp('rargen-usage-');
  server = await startFileServer();
  server.set('/huggingface.co/yucornetto/RAR/resolve/main/rar_b.bin', readFileSync(join(root, 'test', 'fixtures', 'rar-tiny', 'model.bin')));
  const cache = join(installed.work, 'cache');
  env = { ...installed.env, RARGEN_CACHE: cache, RARGEN_DOWNLOAD_BASE: server.base, RARGEN_PROGRESS_INTERVAL_MS: '1' };
}, 600_000);
afterAll(async () => {
  await server?.close();
  installed?.cleanup();
});

/** `npx rargen ...` in the app folder, asynchronously (the loopback server runs in this process). */
async function npx(...args: string[]) {
  try {
    const r = await run('npx', ['--no-install', 'rargen', ...args], { cwd: installed.app, env, encoding: 'utf8' });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

describe('the installed package, as a user meets it', () => {
  it('npx rargen download rar-b, then --generator rar-b', async () => {
    const before = await npx('generate', '--generator', 'rar-b', '--classes', '1', '--tokens-out', 't0.json');
    expect(before.code).toBe(1);
    expect(before.stderr).toContain('rar-b is not downloaded yet');
    expect(before.stderr).toContain('run `npx rargen download rar-b`');

    const dl = await npx('download', 'rar-b');
    expect(dl.code, dl.stderr).toBe(0);
    expect(dl.stderr).toContain(`rargen download: rar-b from ${server.base}/huggingface.co/yucornetto/RAR/resolve/main/rar_b.bin`);
    expect(dl.stderr).toMatch(/rar-b \[#+\] 100% /);
    expect(readFileSync(join(env.RARGEN_CACHE!, 'rar_b.bin')).equals(readFileSync(join(root, 'test', 'fixtures', 'rar-tiny', 'model.bin')))).toBe(true);

    const gen = await npx('generate', '--generator', 'rar-b', '--classes', '3,1-2', '--tokens-out', 't.json', '--device', 'cpu');
    expect(gen.code, gen.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(installed.app, 't.json'), 'utf8')).classLabels).toEqual([3, 1, 2]);
  });

  it('generate --demo with class names writes the images and a grid', async () => {
    const r = await npx('generate', '--demo', '--classes', 'circle,heart,star', '--out', 'out', '--grid', 'grid.png');
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(join(installed.app, 'out')).sort()).toEqual(['000000.png', '000001.png', '000002.png']);
    const png = readFileSync(join(installed.app, 'grid.png'));
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    // 2 x 2 grid of 128 px demo pictures with 2 px padding
    expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([2 * 128 + 3 * 2, 2 * 128 + 3 * 2]);
    expect(r.stderr).toContain('wrote 3 images (circle, heart, star) to out');
    const bad = await npx('generate', '--demo', '--classes', 'circel', '--out', 'out');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('rargen generate: --classes: unknown class name "circel"; did you mean 0 (circle)?');
  });

  it("require('rargen') from CommonJS and import 'rargen/demo'", () => {
    writeFileSync(join(installed.app, 'use.cjs'), "const r = require('rargen'); console.log(typeof r.loadGenerator, typeof r.generate, r.PRESET_NAMES.join(','));\n");
    expect(execFileSync('node', ['use.cjs'], { cwd: installed.app, env, encoding: 'utf8' }).trim()).toBe('function function rar-b,rar-l,rar-xl,rar-xxl');
    const out = execFileSync('node', ['--input-type=module', '-e', "import { DEMO_CLASSES, demoPaths } from 'rargen/demo'; console.log(DEMO_CLASSES.length, typeof demoPaths)"], { cwd: installed.app, env, encoding: 'utf8' });
    expect(out.trim()).toBe('10 function');
  });

  it('a strict TypeScript consumer compiles with the newest tsc', () => {
    const ts = join(installed.work, 'ts');
    mkdirSync(ts);
    writeFileSync(join(ts, 'package.json'), JSON.stringify({ name: 'ts', private: true }));
    let tsc: string;
    try {
      execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', 'typescript@latest'], { cwd: ts, env: installed.env, stdio: 'pipe' });
      tsc = join(ts, 'node_modules', 'typescript', 'bin', 'tsc');
    } catch (e) {
      // no registry: the project's own TypeScript, saying so
      console.warn(`usage test: typescript@latest could not be installed (${(e as Error).message.split('\n')[0]}); using the project's TypeScript`);
      tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    }
    const version = execFileSync('node', [tsc, '--version'], { encoding: 'utf8' }).trim();
    writeFileSync(
      join(installed.app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', skipLibCheck: false, types: [], exactOptionalPropertyTypes: true, noUncheckedIndexedAccess: true },
        files: ['main.ts'],
      }),
    );
    writeFileSync(
      join(installed.app, 'main.ts'),
      [
        "import { loadGenerator, generate, imageGrid, savePng, ValidationError, type GenerateOptions } from 'rargen';",
        "import { DEMO_CLASSES } from 'rargen/demo';",
        "const generator = await loadGenerator('demo', { device: 'cpu' });",
        "const options: GenerateOptions = { generator, classLabels: ['circle', 2], seed: 1n };",
        'const { tokens } = await generate(options);',
        'const images: never[] = [];',
        'if (images.length) await savePng("g.png", imageGrid(images, 1));',
        'const n: number = tokens.length + DEMO_CLASSES.length;',
        'const e: Error = new ValidationError(String(n));',
        'console.log(e.name);',
        'generator.dispose();',
        'export {};',
      ].join('\n'),
    );
    try {
      execFileSync('node', [tsc, '-p', 'tsconfig.json'], { cwd: installed.app, encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      throw new Error(`tsc ${version} failed:\n${(e as { stdout?: string }).stdout ?? ''}${(e as { stderr?: string }).stderr ?? ''}`);
    }
    expect(existsSync(join(installed.app, 'main.js'))).toBe(false); // noEmit
    console.log(`usage test: compiled with tsc ${version}`);
  }, 300_000);
});
