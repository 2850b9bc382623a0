#!/usr/bin/env bash
# bench/gpu.sh: on one NVIDIA GPU (an H200 here), build the addon and the C++ op test,
# run the GPU tests, benchmark generation + VQ decoding for RAR-B and RAR-XXL-shaped
# random weights at batch 128 and 256, and the PyTorch peer (bench/peers/torch_gpu.py)
# on the same GPU. Prints one JSON object (and writes it to $OUT/gpu.json). < 8 min.
#
#   bench/gpu.sh pack   on a dev machine with Node and node_modules: writes .carry/
#                       node.xz (the node binary), node-headers.tar.xz (N-API headers)
#                       and node_modules.tar.xz (without typescript); .carry/ is ignored
#                       by git and is what the GPU machine gets besides the tree.
#   bench/gpu.sh        on the GPU machine (device tool: command "bash bench/gpu.sh",
#                       carry [".carry"], timeout_s 600), from the repo root. It needs nvcc, cmake,
#                       ninja and python3 with PyTorch (whose pip cuBLAS provides
#                       libcublasLt.so.*); Node comes from .carry/ when not installed.
#                       Tests: rargen_optest (every op, CUDA vs CPU), test/gpu/
#                       cuda_ext_test.cc (graphs, bf16 KV cache, split-K), test/gpu/*.test.ts
#                       (models, CUDA vs CPU); cuda_ext_test again with RARGEN_CUBLASLT=0
#                       (the built-in GEMM kernels). Return codes (-1: not run) in the JSON.
#
# Environment: OUT (output folder, default bench/out), PRESETS ("rar-b rar-xxl"),
# BATCHES ("128 256"), SKIP_TESTS=1, SKIP_PEER=1, CUDA_ARCH (default 90-real).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "${1:-}" = "pack" ]; then
  set -e
  mkdir -p .carry
  node_bin=$(readlink -f "$(command -v node)")
  xz -T0 -6 -c "$node_bin" > .carry/node.xz
  inc=$(dirname "$node_bin")/../include/node
  [ -f "$inc/node_api.h" ] || inc=/usr/include/node
  tar -C "$inc" -cJf .carry/node-headers.tar.xz node_api.h node_api_types.h js_native_api.h js_native_api_types.h
  tar -cJf .carry/node_modules.tar.xz --exclude=node_modules/typescript --exclude=node_modules/.cache node_modules
  du -sh .carry/*
  exit 0
fi

OUT=${OUT:-$ROOT/bench/out}
mkdir -p "$OUT"
LOG=$OUT/gpu.log
: > "$LOG"
T_START=$(date +%s)
PRESETS=${PRESETS:-"rar-b rar-xxl"}
BATCHES=${BATCHES:-"128 256"}
say() { echo "[gpu.sh +$(( $(date +%s) - T_START ))s] $*" | tee -a "$LOG" >&2; }

# ---- Node (carried as .carry/node.xz when the machine has none) ----
unxz_to() {  # file.xz dest
  if command -v xz >/dev/null; then xz -dc "$1" > "$2"
  else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$1" "$2"; fi
}
untar_xz() {  # file.tar.xz dir
  if command -v xz >/dev/null; then tar -xJf "$1" -C "$2"
  else python3 -c 'import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; fi
}
NODE_DIR=/tmp/rargen-node
mkdir -p "$NODE_DIR/bin" "$NODE_DIR/include/node"
if ! command -v node >/dev/null && [ -f .carry/node.xz ]; then
  unxz_to .carry/node.xz "$NODE_DIR/bin/node" && chmod +x "$NODE_DIR/bin/node"
  export PATH=$NODE_DIR/bin:$PATH
fi
if [ -f .carry/node-headers.tar.xz ]; then untar_xz .carry/node-headers.tar.xz "$NODE_DIR/include/node"; NODE_INC=$NODE_DIR/include/node
else NODE_INC=$(dirname "$(readlink -f "$(command -v node)")")/../include/node; fi
if [ ! -d node_modules/node-addon-api ] && [ -f .carry/node_modules.tar.xz ]; then untar_xz .carry/node_modules.tar.xz "$ROOT"; fi
command -v node >/dev/null || { echo '{"error": "no node: run bench/gpu.sh pack on a dev machine and carry .carry/"}'; exit 1; }
say "node $(node --version), headers $NODE_INC"

# ---- cuBLASLt from PyTorch's pip packages ----
CUBLAS_DIR=$(python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for pat in ("nvidia/cublas/lib/libcublasLt.so*", "nvidia/cu*/lib/libcublasLt.so*", "nvidia/**/libcublasLt.so*", "torch/lib/libcublasLt.so*"):
        hits = glob.glob(os.path.join(r, pat), recursive=True)
        if hits:
            d = os.path.dirname(sorted(hits)[0])
            rt = glob.glob(os.path.join(r, "nvidia", "cuda_runtime", "lib"))  # in case cuBLASLt wants libcudart
            print(":".join([d] + rt)); sys.exit(0)
EOF
)
[ -n "$CUBLAS_DIR" ] && export LD_LIBRARY_PATH=$CUBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
say "cuBLASLt folder: ${CUBLAS_DIR:-not found (built-in GEMM kernels)}"
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
say "GPU: $GPU"

# ---- build: the addon and rargen_optest, sm_90 only (all archs: npm run build:native) ----
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
B0=$(date +%s)
BUILD_OK=false
if cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DRARGEN_CUDA=ON \
     -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90-real}" \
     -DCMAKE_JS_INC="$NODE_INC" >> "$LOG" 2>&1 &&
   ninja -C build-gpu rargen >> "$LOG" 2>&1; then
  BUILD_OK=true
  # Tests and the benchmark load the addon from build/Release (node-gyp-build). On a dev
  # machine whose build/ holds another build, put that one back on exit.
  if [ -f build/Release/rargen.node ] && [ ! -f build/Release/.rargen-gpu-sh ]; then
    cp build/Release/rargen.node "$OUT/rargen.node.saved"
    trap 'cp "$OUT/rargen.node.saved" build/Release/rargen.node; rm -f build/Release/.rargen-gpu-sh' EXIT
  fi
  mkdir -p build/Release && cp build-gpu/rargen.node build/Release/rargen.node && touch build/Release/.rargen-gpu-sh
fi
OPTEST_BUILT=false
if $BUILD_OK && ninja -C build-gpu rargen_optest >> "$LOG" 2>&1; then OPTEST_BUILT=true; fi
BUILD_S=$(( $(date +%s) - B0 ))
say "build ok=$BUILD_OK (optest $OPTEST_BUILT) in ${BUILD_S}s"
if ! $BUILD_OK; then
  tail -40 "$LOG" >&2
  echo "{\"error\": \"build failed\", \"gpu\": \"$GPU\", \"log\": \"$LOG\"}" | tee "$OUT/gpu.json"
  exit 1
fi
node -e "const a=require('./build/Release/rargen.node'); console.error(JSON.stringify(a.cudaStatus()))" 2>> "$LOG"

# ---- tests ----
OPTEST_RC=-1; EXT_RC=-1; EXT_BUILTIN_RC=-1; VITEST_RC=-1
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  if $OPTEST_BUILT; then
    timeout 120 ./build-gpu/rargen_optest > "$OUT/optest.log" 2>&1; OPTEST_RC=$?
    say "rargen_optest rc=$OPTEST_RC (tail: $(tail -1 "$OUT/optest.log"))"
    grep -E "FAIL" "$OUT/optest.log" | head -20 >&2
  fi
  CUDART=$(grep -m1 '^CUDA_cudart_static_LIBRARY:' build-gpu/CMakeCache.txt | cut -d= -f2)
  if g++ -O2 -std=c++17 -Isrc test/gpu/cuda_ext_test.cc build-gpu/librargen_cuda.a "$CUDART" \
       -ldl -lpthread -lrt -o /tmp/cuda_ext_test >> "$LOG" 2>&1; then
    timeout 60 /tmp/cuda_ext_test > "$OUT/cuda_ext.log" 2>&1; EXT_RC=$?
    RARGEN_CUBLASLT=0 timeout 60 /tmp/cuda_ext_test > "$OUT/cuda_ext_builtin.log" 2>&1; EXT_BUILTIN_RC=$?
    say "cuda_ext_test rc=$EXT_RC, with the built-in GEMM rc=$EXT_BUILTIN_RC"
    grep -hE "FAIL|checks" "$OUT/cuda_ext.log" "$OUT/cuda_ext_builtin.log" | head -20 >&2
  else
    say "cuda_ext_test did not build (see $LOG)"
  fi
  VITEST="node node_modules/vitest/vitest.mjs run"
  RARGEN_CUDA_VERBOSE=1 timeout 240 $VITEST test/gpu > "$OUT/vitest.log" 2>&1; VITEST_RC=$?
  say "vitest test/gpu (cuBLASLt) rc=$VITEST_RC"
  grep -E "max abs|identical|Tests |✓|×|FAIL|skipped" "$OUT/vitest.log" | head -40 >&2
fi

# ---- benchmark: rargen ----
cat > /tmp/rargen-bench.mjs <<'EOF'
// One preset: random bf16 generator weights and an f32 MaskGIT-VQGAN decoder on
// cuda:0; warm-up, then per batch: rarGenerate (256 steps, CFG, the preset's sampling
// settings) and vqDecode of its tokens, timed separately. One JSON line per batch.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const addon = require(process.cwd() + '/build/Release/rargen.node');
const [preset, batchesCsv] = process.argv.slice(2);
const device = process.env.BENCH_DEVICE || 'cuda'; // 'cpu': smoke test of this script only
const warm = Number(process.env.BENCH_WARMUP || 8);
const P = {
  tiny: [64, 2, 4, 256, 4.0, 1.0, 1.0],
  'rar-b': [768, 24, 16, 3072, 16.0, 2.75, 1.0],
  'rar-l': [1024, 24, 16, 4096, 15.5, 2.5, 1.02],
  'rar-xl': [1280, 32, 16, 5120, 6.9, 1.5, 1.02],
  'rar-xxl': [1408, 40, 16, 6144, 8.0, 1.2, 1.02],
}[preset];
const [C, depth, H, I, g, pw, temp] = P;
const N = 256, V = 1024, K = 1000;
const cfg = { hiddenSize: C, depth, numHeads: H, mlpDim: I, seqLen: N, codebookSize: V, numClasses: K, posEmbedRows: N + 1024, timestepRows: N + 100 };
// xorshift noise, std 0.02 (LayerNorm weights 1 + noise): finite activations through any depth
let s = 2463534242;
const noise = new Float32Array(1 << 20);
for (let i = 0; i < noise.length; i++) { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; noise[i] = ((s / 4294967296) * 2 - 1) * 0.0346; }
function tensor(shape, one = false) {
  const n = shape.reduce((a, b) => a * b, 1), a = new Float32Array(n);
  for (let i = 0; i < n; i += noise.length) { a.set(noise.subarray(0, Math.min(noise.length, n - i)), i); }
  if (one) for (let i = 0; i < n; i++) a[i] += 1;
  return a;
}
const t0 = performance.now();
const rar = addon.createRar(cfg, device, 'bf16');
const D = C / H;
const set = (m, name, shape, one = false) => addon.setWeight(m, name, tensor(shape, one), shape);
set(rar, 'cls_token', [1, 1, C]); set(rar, 'pos_embed', [1, N + 1024, C]); set(rar, 'target_aware_pos_embed', [1, N + 1024, C]);
set(rar, 'timesteps_embeddings', [1, N + 100, C]); set(rar, 'embeddings.weight', [V + 1 + K + 1, C]);
for (let i = 0; i < depth; i++) {
  const p = `blocks.${i}.`;
  set(rar, p + 'norm1.weight', [C], true); set(rar, p + 'norm1.bias', [C]);
  set(rar, p + 'attn.qkv.weight', [3 * C, C]); set(rar, p + 'attn.qkv.bias', [3 * C]);
  for (const n of ['q_norm', 'k_norm']) { set(rar, p + `attn.${n}.weight`, [D], true); set(rar, p + `attn.${n}.bias`, [D]); }
  set(rar, p + 'attn.proj.weight', [C, C]); set(rar, p + 'attn.proj.bias', [C]);
  set(rar, p + 'norm2.weight', [C], true); set(rar, p + 'norm2.bias', [C]);
  set(rar, p + 'mlp.fc1.weight', [I, C]); set(rar, p + 'mlp.fc1.bias', [I]);
  set(rar, p + 'mlp.fc2.weight', [C, I]); set(rar, p + 'mlp.fc2.bias', [C]);
  set(rar, p + 'adaLN_modulation.1.weight', [6 * C, C]); set(rar, p + 'adaLN_modulation.1.bias', [6 * C]);
}
set(rar, 'adaln_before_head.adaLN_modulation.1.weight', [2 * C, C]); set(rar, 'adaln_before_head.adaLN_modulation.1.bias', [2 * C]);
set(rar, 'lm_head.weight', [V, C]); set(rar, 'lm_head.bias', [V]);
addon.finalize(rar);
const vcfg = { hiddenChannels: 128, channelMult: [1, 1, 2, 2, 4], numResBlocks: 2, zChannels: 256, codebookSize: 1024, resolution: 256 };
const vq = addon.createVq(vcfg, device);
const block = (p, cin, cout) => {
  set(vq, p + '.norm1.weight', [cin], true); set(vq, p + '.norm1.bias', [cin]); set(vq, p + '.conv1.weight', [cout, cin, 3, 3]);
  set(vq, p + '.norm2.weight', [cout], true); set(vq, p + '.norm2.bias', [cout]); set(vq, p + '.conv2.weight', [cout, cout, 3, 3]);
  if (cin !== cout) set(vq, p + '.nin_shortcut.weight', [cout, cout, 1, 1]);
};
{
  const h = 128, m = vcfg.channelMult, L = m.length, top = h * m[L - 1];
  set(vq, 'encoder.conv_in.weight', [h, 3, 3, 3]);
  let cin = h;
  for (let i = 0; i < L; i++) for (let j = 0; j < 2; j++) { block(`encoder.down.${i}.block.${j}`, cin, h * m[i]); cin = h * m[i]; }
  for (let j = 0; j < 2; j++) block(`encoder.mid.${j}`, top, top);
  set(vq, 'encoder.norm_out.weight', [top], true); set(vq, 'encoder.norm_out.bias', [top]);
  set(vq, 'encoder.conv_out.weight', [256, top, 1, 1]); set(vq, 'encoder.conv_out.bias', [256]);
  set(vq, 'decoder.conv_in.weight', [top, 256, 3, 3]); set(vq, 'decoder.conv_in.bias', [top]);
  for (let j = 0; j < 2; j++) block(`decoder.mid.${j}`, top, top);
  cin = top;
  for (let i = L - 1; i >= 0; i--) {
    for (let j = 0; j < 2; j++) { block(`decoder.up.${i}.block.${j}`, cin, h * m[i]); cin = h * m[i]; }
    if (i !== 0) { set(vq, `decoder.up.${i}.upsample_conv.weight`, [cin, cin, 3, 3]); set(vq, `decoder.up.${i}.upsample_conv.bias`, [cin]); }
  }
  set(vq, 'decoder.norm_out.weight', [cin], true); set(vq, 'decoder.norm_out.bias', [cin]);
  set(vq, 'decoder.conv_out.weight', [3, cin, 3, 3]); set(vq, 'decoder.conv_out.bias', [3]);
  set(vq, 'quantize.embedding.weight', [1024, 256]);
}
addon.finalize(vq);
const loadS = (performance.now() - t0) / 1000;
const opts = (B) => ({ classIds: Int32Array.from({ length: B }, (_, i) => (i * 7) % K), guidanceScale: g, guidanceScalePow: pw, temperature: temp, topK: 0, topP: 1, greedy: false, seed: '0', indexOffset: 0 });
const w = await addon.rarGenerate(rar, opts(warm)); // warm-up: cuBLASLt plans, kernels, allocator
await addon.vqDecode(vq, w, warm);
for (const B of batchesCsv.split(',').map(Number)) {
  const a = performance.now();
  const tokens = await addon.rarGenerate(rar, opts(B));
  const b = performance.now();
  await addon.vqDecode(vq, tokens, B);
  const c = performance.now();
  const gen = (b - a) / 1000, vqs = (c - b) / 1000;
  console.log(JSON.stringify({ impl: 'rargen', preset, batch: B, dtype: 'bf16', gen_s: +gen.toFixed(4), vq_s: +vqs.toFixed(4),
    images_per_s: +(B / (gen + vqs)).toFixed(2), gen_images_per_s: +(B / gen).toFixed(2), load_s: +loadS.toFixed(2) }));
}
addon.free(rar);
addon.free(vq);
EOF
BATCH_CSV=$(echo $BATCHES | tr ' ' ',')
: > "$OUT/results.jsonl"
for p in $PRESETS; do
  say "rargen $p batches $BATCH_CSV"
  RARGEN_CUDA_VERBOSE=1 timeout 180 node /tmp/rargen-bench.mjs "$p" "$BATCH_CSV" >> "$OUT/results.jsonl" 2>> "$LOG" || say "rargen $p failed (rc $?)"
done
if [ "${SKIP_PEER:-0}" != 1 ]; then
  for p in $PRESETS; do
    say "torch peer $p batches $BATCH_CSV"
    timeout 240 python3 bench/peers/torch_gpu.py --preset "$p" --batches "$BATCH_CSV" --dtype bf16 >> "$OUT/results.jsonl" 2>> "$LOG" || say "torch peer $p failed (rc $?)"
  done
fi
grep -h "linear() uses" "$LOG" | head -1 > "$OUT/matmul.txt" || true

# ---- JSON summary ----
node - "$OUT" "$GPU" "$BUILD_S" "$OPTEST_RC" "$VITEST_RC" "$(( $(date +%s) - T_START ))" "$EXT_RC" "$EXT_BUILTIN_RC" <<'EOF' | tee "$OUT/gpu.json"
const fs = require('node:fs');
const [out, gpu, buildS, optest, vitest, totalS, ext, extBuiltin] = process.argv.slice(2);
const rows = fs.readFileSync(out + '/results.jsonl', 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
const key = (r) => `${r.preset}@${r.batch}`;
const torch = Object.fromEntries(rows.filter((r) => r.impl === 'torch').map((r) => [key(r), r]));
const ours = rows.filter((r) => r.impl === 'rargen').map((r) => ({ ...r, torch_images_per_s: torch[key(r)]?.images_per_s ?? null,
  speedup_vs_torch: torch[key(r)] ? +(r.images_per_s / torch[key(r)].images_per_s).toFixed(2) : null }));
let matmul = '';
try { matmul = fs.readFileSync(out + '/matmul.txt', 'utf8').trim(); } catch {}
console.log(JSON.stringify({ date: new Date().toISOString(), gpu, matmul, build_s: +buildS, total_s: +totalS,
  tests: { optest_rc: +optest, cuda_ext_rc: +ext, cuda_ext_builtin_gemm_rc: +extBuiltin, vitest_gpu_rc: +vitest },
  rargen: ours, torch: Object.values(torch) }, null, 1));
EOF
