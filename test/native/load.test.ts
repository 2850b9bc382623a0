// Loading the addon: a prebuilt binary is probed in a child process and a failure is
// explained (glibc/libstdc++ too old -> build from source; driver too old for the
// bundled CUDA runtime -> which driver, or build against the local toolkit).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { explainCudaStatus, loadFailureHelp, probeAddon, packageRoot } from '../../lib/native.js';
import { hasModelAddon } from '../api/helpers.js';

describe('addon load probe', () => {
  it.runIf(hasModelAddon())('loads the addon this checkout uses', async () => {
    const gyp = (await import('node-gyp-build')).default as unknown as { path(d: string): string };
    expect(probeAddon(gyp.path(packageRoot()))).toBeUndefined();
  });

  it('reports a binary that does not load, without loading it here', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rargen-probe-'));
    try {
      const bad = join(dir, 'rargen.node');
      writeFileSync(bad, 'not an ELF file. '.repeat(100));
      expect(probeAddon(bad)).toMatch(/invalid ELF header/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says what to do when glibc or libstdc++ is too old', () => {
    const help = loadFailureHelp("/x/prebuilds/linux-x64/rargen.node does not load here: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found (required by rargen.node)");
    expect(help).toBe(
      "  - the prebuilt binary needs glibc >= 2.34 (this system's is older; `ldd --version` shows it)\n" +
        '  - build the CPU backend from source instead: npm rebuild rargen --build-from-source (needs a C++17 compiler and python3)\n',
    );
    expect(loadFailureHelp("version `GLIBCXX_3.4.30' not found")).toContain('needs a newer libstdc++ (GLIBCXX_3.4.30, GCC >= 12');
    expect(loadFailureHelp('Cannot find module')).toBe('');
  });

  it('says which driver the bundled CUDA runtime needs', () => {
    const st = explainCudaStatus({ built: true, available: false, reason: 'NVIDIA driver too old: it supports CUDA 12.4, rargen was built with CUDA 13.0', driverVersion: 12040, runtimeVersion: 13000, devices: [] });
    expect(st.reason).toBe(
      'NVIDIA driver too old: it supports CUDA 12.4, rargen was built with CUDA 13.0; CUDA 13.x needs an NVIDIA driver >= 580: update the driver, ' +
        "or build rargen against the CUDA toolkit installed here (`npm run build:native` in a clone of rargen, with that toolkit's nvcc on PATH)",
    );
    const other = { built: true, available: false, reason: 'no CUDA device found', devices: [] };
    expect(explainCudaStatus(other)).toBe(other);
  });
});

describe('native() with a binary that does not load', () => {
  it('fails with the probe result and the fixes, in one error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rargen-probe-'));
    try {
      const bad = join(dir, 'rargen.node');
      writeFileSync(bad, 'not an ELF file. '.repeat(100));
      const dist = join(packageRoot(), 'dist', 'lib', 'native.js');
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(dist)}); try { m.native(); } catch (e) { console.log(e.message); }`], {
        encoding: 'utf8',
        env: { ...process.env, RARGEN_ADDON_PATH: bad },
      });
      expect(r.stdout).toContain(`cause: ${bad} does not load here: `);
      expect(r.stdout).toMatch(/invalid ELF header/);
      expect(r.stdout).toContain('Likely fixes:');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
