// Loads the native addon (prebuilt under prebuilds/, or built under build/) with
// node-gyp-build. When it cannot be loaded, the error lists the likely causes and
// fixes, as sharp does. Everything else in lib/ goes through `native()`.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** The package root: the nearest folder above this file whose package.json is rargen's. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if (JSON.parse(readFileSync(pj, 'utf8')).name === 'rargen') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('rargen: could not find the package root (package.json) above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export interface BuildInfo {
  cuda: boolean;
  arch: string;
  avx2: boolean;
  hardwareThreads: number;
}

export interface CudaDevice {
  index: number;
  name: string;
  totalMemory: number;
  computeCapability: string;
}

export interface CudaStatus {
  built: boolean;
  available: boolean;
  reason: string;
  driverVersion?: number;
  runtimeVersion?: number;
  devices: CudaDevice[];
}

/** The raw addon. Its functions re-check their arguments; call them through lib/ wrappers. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type NativeAddon = Record<string, any> & {
  buildInfo(): BuildInfo;
  cudaStatus(): CudaStatus;
};

let cached: NativeAddon | undefined;

export function native(): NativeAddon {
  if (cached) return cached;
  const root = packageRoot();
  try {
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    cached = load(root);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new Error(
      `rargen: could not load the native addon (${process.platform}-${process.arch}, Node ${process.version}).\n` +
        `  cause: ${msg}\n` +
        `  Likely fixes:\n` +
        `  - reinstall so the prebuilt binary or a local build is present: npm install rargen --foreground-scripts\n` +
        `  - without a prebuilt binary for this platform, a C++17 compiler and python3 are needed (node-gyp builds the CPU backend)\n` +
        `  - from a git checkout: npm run build:native (cmake-js; builds the CUDA backend too when nvcc is found)`,
    );
  }
  return cached;
}
