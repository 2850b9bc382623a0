#!/usr/bin/env node
// prebuildify drives node-gyp; rargen's full build (CUDA included) is CMake. prebuildify
// calls this shim as if it were node-gyp (PREBUILD_NODE_GYP), and the shim runs
// cmake-js in its own folder (build-prebuild, so a developer's build/ is left alone)
// and copies the addon to build/Release, where prebuildify looks for it.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = process.argv.slice(2);
if (args[0] !== 'rebuild' && args[0] !== 'build') {
  console.error('cmake-js-shim: unsupported node-gyp command ' + JSON.stringify(args[0]));
  process.exit(1);
}
const fs = require('node:fs');
const root = path.resolve(__dirname, '..');
const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build-prebuild'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status === null ? 1 : r.status);
fs.mkdirSync(path.join(root, 'build', 'Release'), { recursive: true });
const tmp = path.join(root, 'build', 'Release', 'rargen.node.tmp');
fs.copyFileSync(path.join(root, 'build-prebuild', 'Release', 'rargen.node'), tmp);
fs.renameSync(tmp, path.join(root, 'build', 'Release', 'rargen.node'));
