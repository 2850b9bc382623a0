#!/usr/bin/env bash
# bench/gpu.sh: the one prepared call for a GPU machine. Builds once, then runs in
# stages, each with its own time budget, each writing $OUT/<stage>.json (and its log)
# the moment it ends, killed or not; $OUT/gpu.json gathers the stages after each one.
#
#   bash bench/gpu.sh pack       here, on a dev machine with Node and node_modules: writes
#                                .carry/ (node.xz, node-headers.tar.xz, node_modules.tar.xz),
#                                checks tree + carry <= 64 MiB and prints the device tool's
#                                `carry` list and `timeout_s`.
#   bash bench/gpu.sh            on the GPU machine (device tool, command "bash bench/gpu.sh"):
#                                build, (1) ops, (2) end-to-end tests, (3) benchmarks. < 7 min.
#   bash bench/gpu.sh --tests    stages 1-2 only (no benchmark).
#   bash bench/gpu.sh --dry-run  here: the same script with the CPU backend standing in for
#                                CUDA (RARGEN_GPU_STANDIN=cpu, tiny benchmark shapes), under a
#                                PATH with no system node (Node only from .carry/).
#
# Stages (budget in seconds; each is also cut to what is left of GPU_SH_BUDGET, 420):
#   setup   20   Node from .carry/ when the machine has none, cuBLASLt from PyTorch's pip
#                wheels (LD_LIBRARY_PATH), GPU name
#   build   170  one cmake configure + ONE build call: the addon, rargen_optest and
#                cuda_ext_test (the core C++ is one object library, compiled once),
#                CUDA for this GPU's architecture only (CUDA_ARCH, default 90-real)
#   optest  40   (1) rargen_optest: every op of src/backend.h, CUDA vs CPU vs a naive
#                reference, forward and backward, every dtype (src/test/optest.cc)
#   ext     20   (1) test/gpu/cuda_ext_test.cc: graphs, F16/BF16 KV cache, split-K, linear(),
#                again with RARGEN_CUBLASLT=0 (built-in GEMM kernels)
#   rar 45, vqgan 25, inception 20, train 30   (2) vitest: the device-parameterised model
#                suites test/native/rar.test.ts, test/native/vqgan.test.ts,
#                test/train/native.test.ts (their cpu and cuda variants) and
#                test/gpu/inception.test.ts: RAR decode vs CPU, KV cache vs full forward,
#                graph path vs direct, VQGAN, Inception, training gradients and 3 AdamW steps
#   bench   50+  (3) RAR-B generation + VQ decode at batch 128, f32 and bf16, rargen and the
#                PyTorch peer bench/peers/torch_gpu.py on the same GPU
# Return codes: 0 all ran stages passed; 1 some stage failed or was killed.
#
# Environment: OUT (default ./gpu-out), GPU_SH_BUDGET (420), BUDGET_<STAGE> (overrides one
# stage, e.g. BUDGET_OPTEST=2 to see a killed stage's partial JSON), CUDA_ARCH, BENCH_BATCH
# (128), PYTHON (python3 with torch), BUILD_DIR (build-gpu; the dry run: build-gpu-dry),
# ONLY (stages to run besides setup and build, e.g. ONLY="optest rar"), OPTEST_FILTER
# (one rargen_optest group, e.g. linear).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=run
TESTS_ONLY=0
for a in "$@"; do
  case "$a" in
    pack) MODE=pack ;;
    --tests) TESTS_ONLY=1 ;;
    --dry-run) MODE=dry ;;
    --stand-in) MODE=standin ;;  # internal: the dry run's inner call, in the copied tree
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "bench/gpu.sh: unknown argument '$a' (use pack, --tests, --dry-run or --help)" >&2; exit 2 ;;
  esac
done

CARRY=.carry
LIMIT_BYTES=$((64 * 1024 * 1024))
DEVICE_TIMEOUT_S=480  # what `pack` tells the device tool: the 420 s run plus start-up slack

# ---------------------------------------------------------------- pack (dev machine)
if [ "$MODE" = pack ]; then
  set -e
  command -v node >/dev/null || { echo "bench/gpu.sh pack: needs node on PATH" >&2; exit 1; }
  [ -d node_modules/vitest ] || { echo "bench/gpu.sh pack: needs node_modules (npm ci)" >&2; exit 1; }
  mkdir -p "$CARRY"
  node_bin=$(readlink -f "$(command -v node)")
  ver=$(node --version)
  if [ ! -f "$CARRY/node.xz" ] || [ "$(cat "$CARRY/node.version" 2>/dev/null)" != "$ver $(stat -c %s "$node_bin")" ]; then
    xz -T0 -6 -c "$node_bin" > "$CARRY/node.xz.tmp" && mv "$CARRY/node.xz.tmp" "$CARRY/node.xz"
    echo "$ver $(stat -c %s "$node_bin")" > "$CARRY/node.version"
  fi
  inc=$(dirname "$node_bin")/../include/node
  [ -f "$inc/node_api.h" ] || inc=/usr/include/node
  tar -C "$inc" -cJf "$CARRY/node-headers.tar.xz" node_api.h node_api_types.h js_native_api.h js_native_api_types.h
  # What the device needs: vitest and its dependencies, node-addon-api, the runtime
  # dependencies of lib/. Not the compilers of the dev side (typescript, cmake-js, ...).
  tar -cf - --exclude=node_modules/typescript --exclude=node_modules/.cache --exclude=node_modules/@types \
      --exclude=node_modules/cmake-js --exclude=node_modules/prebuildify --exclude=node_modules/playwright-core --exclude='*.map' --exclude='*.md' \
      node_modules | xz -T0 -6 > "$CARRY/node_modules.tar.xz"
  tree=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
  carry=$(du -cb "$CARRY"/node.xz "$CARRY"/node.version "$CARRY"/node-headers.tar.xz "$CARRY"/node_modules.tar.xz | tail -1 | cut -f1)
  total=$((tree + carry))
  awk -v t="$tree" -v c="$carry" -v l=$((LIMIT_BYTES / 1048576)) -v n="$CARRY" \
    'BEGIN { printf "tree %.1f MiB + %s %.1f MiB = %.1f MiB of %d MiB\n", t / 1048576, n, c / 1048576, (t + c) / 1048576, l }'
  if [ "$total" -gt "$LIMIT_BYTES" ]; then
    echo "bench/gpu.sh pack: over the 64 MiB limit by $(( (total - LIMIT_BYTES) / 1024 )) KiB: remove untracked files or slim node_modules" >&2
    exit 1
  fi
  echo "device tool: command \"bash bench/gpu.sh\", carry [\"$CARRY\"], timeout_s $DEVICE_TIMEOUT_S"
  echo "  (stages 1-2 only: command \"bash bench/gpu.sh --tests\", same carry and timeout_s)"
  exit 0
fi

# ---------------------------------------------------------------- dry run (here)
# What the device gets, rebuilt here: the tree (tracked + untracked-not-ignored files)
# and .carry/ copied to DRY_ROOT (build outputs kept between runs, as the device keeps
# them), then this script run there with the CPU backend standing in for CUDA, under a
# PATH with no system node: folders that hold node are mirrored without it.
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ "$MODE" = dry ]; then
  [ -f $CARRY/node.xz ] || { echo "bench/gpu.sh --dry-run: no $CARRY/node.xz: run 'bash bench/gpu.sh pack' first" >&2; exit 1; }
  # per checkout, so that dry runs of several worktrees at once do not share a copy
  DRY_ROOT=${DRY_ROOT:-/tmp/rargen-gpu-dry-$(echo "$ROOT" | md5sum | cut -c1-8)}
  mkdir -p "$DRY_ROOT"
  find "$DRY_ROOT" -mindepth 1 -maxdepth 1 ! -name build-gpu-dry ! -name node_modules -exec rm -rf {} +
  git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$DRY_ROOT"
  cp -r $CARRY "$DRY_ROOT/"
  # a fixed place: the build folder's CMake cache remembers the tools' paths
  NONODE=$DRY_ROOT.nonode-path
  rm -rf "$NONODE" && mkdir -p "$NONODE"
  newpath=""
  IFS=: read -r -a dirs <<< "$PATH"
  i=0
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    if [ -e "$d/node" ] || [ -e "$d/npm" ] || [ -e "$d/npx" ]; then
      m="$NONODE/$i"; i=$((i + 1)); mkdir -p "$m"
      for f in "$d"/*; do
        case "$(basename "$f")" in node | nodejs | npm | npx | corepack) continue ;; esac
        ln -s "$f" "$m/" 2>/dev/null
      done
      d=$m
    fi
    newpath=${newpath:+$newpath:}$d
  done
  t0=$(date +%s)
  PATH=$newpath OUT=$OUT RARGEN_GPU_STANDIN=cpu bash "$DRY_ROOT/bench/gpu.sh" --stand-in $([ $TESTS_ONLY = 1 ] && echo --tests)
  rc=$?
  echo "bench/gpu.sh --dry-run: rc $rc in $(($(date +%s) - t0))s (tree copied to $DRY_ROOT); results in $OUT" >&2
  exit $rc
fi
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.jsonl
T_START=$(date +%s)
BUDGET_TOTAL=${GPU_SH_BUDGET:-420}
DEADLINE=$((T_START + BUDGET_TOTAL))
DRY=0
[ "$MODE" = standin ] && DRY=1
# Node from .carry/ is unpacked inside the tree (ignored: build-*/), one per checkout.
NODE_DIR=$ROOT/build-gpu-node
if [ $DRY = 1 ] && command -v node >/dev/null && [ "$(command -v node)" != "$NODE_DIR/bin/node" ]; then
  echo "bench/gpu.sh --stand-in: node is on PATH ($(command -v node)); run 'bench/gpu.sh --dry-run'" >&2; exit 1
fi
BUILD_DIR=${BUILD_DIR:-$([ $DRY = 1 ] && echo build-gpu-dry || echo build-gpu)}
say() { echo "[gpu.sh +$(($(date +%s) - T_START))s] $*" >&2; }

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then PY=$p; break; fi
  done
  [ -n "$PY" ] || PY=$(command -v python3 || true)
fi
SUMMARIZE() { if [ -n "$PY" ]; then "$PY" bench/gpu/summarize.py "$@"; else echo "{\"stage\": \"$2\", \"error\": \"no python3 to summarise\"}"; fi; }

export CARRY DRY PY ROOT BUILD_DIR OUT NODE_DIR
[ $DRY = 0 ] && export RARGEN_GPU_REQUIRE=1  # on the device a skipped CUDA check is a failure
STAGE_RC_ALL=0
# Budget of a stage: BUDGET_<NAME> or its default, cut to the time left minus what the
# later stages need at least (reserve).
budget_for() {  # name default reserve
  local v="BUDGET_$(echo "$1" | tr a-z A-Z)" want left
  want=${!v:-$2}
  left=$((DEADLINE - $(date +%s) - $3))
  [ "$left" -lt "$want" ] && want=$left
  [ "$want" -lt 1 ] && want=1
  echo "$want"
}
# run_stage name kind default_budget reserve cmd...: log to $OUT/name.log, JSON to
# $OUT/name.json (status ok | failed | killed | skipped), the summary to $OUT/gpu.json.
run_stage() {
  local name=$1 kind=$2 def=$3 reserve=$4
  shift 4
  local b t0 rc
  if [ -n "${ONLY:-}" ] && [ "$name" != setup ] && [ "$name" != build ] && [[ " $ONLY " != *" $name "* ]]; then
    skip_stage "$name" "not in ONLY=$ONLY"
    return 0
  fi
  b=$(budget_for "$name" "$def" "$reserve")
  # "running" until it ends: what a run killed from outside (the device tool) leaves
  echo "{\"stage\": \"$name\", \"status\": \"running\", \"budget_s\": $b, \"log\": \"$name.log\"}" > "$OUT/$name.json"
  gather
  say "$name: start (budget ${b}s)"
  t0=$(date +%s)
  if declare -F "$1" >/dev/null; then  # a shell function: run it in a child bash
    timeout --kill-after=5 "$b" bash -c "$(declare -p GEN TARGETS NVCC CUDA_FLAG JOBS NODE_INC TESTS_ONLY 2>/dev/null)
$(declare -f "$1"); $*" > "$OUT/$name.log" 2>&1
  else
    timeout --kill-after=5 "$b" "$@" > "$OUT/$name.log" 2>&1
  fi
  rc=$?
  SUMMARIZE "$kind" "$name" "$OUT/$name.log" "$rc" "$(($(date +%s) - t0))" "$b" "$OUT" > "$OUT/$name.json.tmp" &&
    mv "$OUT/$name.json.tmp" "$OUT/$name.json"
  [ "$rc" -ne 0 ] && STAGE_RC_ALL=1
  say "$name: rc=$rc in $(($(date +%s) - t0))s: $(head -c 300 "$OUT/$name.json" | tr '\n' ' ')"
  gather
  return $rc
}
skip_stage() {  # name why
  echo "{\"stage\": \"$1\", \"status\": \"skipped\", \"why\": \"$2\"}" > "$OUT/$1.json"
  say "$1: skipped: $2"
  gather
}
gather() { SUMMARIZE gather all - 0 $(($(date +%s) - T_START)) "$BUDGET_TOTAL" "$OUT" > "$OUT/gpu.json.tmp" && mv "$OUT/gpu.json.tmp" "$OUT/gpu.json"; }

# On a dev machine the tests load build/Release/rargen.node: put the one built here there
# for the run and the developer's back afterwards (also after a run that was killed).
SAVED=build/Release/rargen.node.saved-by-gpu-sh
restore_addon() { if [ -f "$SAVED" ]; then mv -f "$SAVED" build/Release/rargen.node; fi; rm -f build/Release/.rargen-gpu-sh; }
restore_addon
trap restore_addon EXIT

# ---------------------------------------------------------------- setup
setup() {
  set -e
  local nd=$NODE_DIR
  mkdir -p "$nd/bin" "$nd/include/node"
  if ! command -v node >/dev/null; then
    [ -f $CARRY/node.xz ] || { echo "no node on PATH and no $CARRY/node.xz: run 'bash bench/gpu.sh pack' here and carry $CARRY"; exit 3; }
    if command -v xz >/dev/null; then xz -dc $CARRY/node.xz > "$nd/bin/node"
    else "$PY" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' $CARRY/node.xz "$nd/bin/node"; fi
    chmod +x "$nd/bin/node"
    echo "node: from $CARRY/node.xz"
  fi
  if [ -f $CARRY/node-headers.tar.xz ]; then tar -xJf $CARRY/node-headers.tar.xz -C "$nd/include/node"; fi
  if [ ! -d node_modules/vitest ] || [ $CARRY/node_modules.tar.xz -nt node_modules/.gpu-sh-unpacked ]; then
    [ -f $CARRY/node_modules.tar.xz ] || { echo "no node_modules and no $CARRY/node_modules.tar.xz"; exit 3; }
    rm -rf node_modules && tar -xJf $CARRY/node_modules.tar.xz -C "$ROOT" && touch node_modules/.gpu-sh-unpacked
    echo "node_modules: from $CARRY/node_modules.tar.xz"
  fi
  PATH=$nd/bin:$PATH node --version
  [ -f "$nd/include/node/node_api.h" ] && echo "node headers: $nd/include/node"
  # cuBLASLt: PyTorch's pip wheels (nvidia/cublas/lib) or torch/lib
  "$PY" - <<'EOF' || true
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for pat in ("nvidia/cublas/lib/libcublasLt.so*", "nvidia/cu*/lib/libcublasLt.so*", "torch/lib/libcublasLt.so*"):
        hits = sorted(glob.glob(os.path.join(r, pat)))
        if hits:
            print("cublaslt_dir: " + os.path.dirname(hits[0]))
            raise SystemExit(0)
print("cublaslt_dir: none (built-in GEMM kernels)")
EOF
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo none)"
  echo "nvcc: $(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || echo none)"
  "$PY" -c 'import torch; print("torch: " + torch.__version__ + " cuda " + str(torch.cuda.is_available()))' 2>/dev/null || echo "torch: none"
}
run_stage setup setup 20 400 setup
SETUP_RC=$?
export PATH=$NODE_DIR/bin:$PATH
NODE_INC=$NODE_DIR/include/node
[ -f "$NODE_INC/node_api.h" ] || NODE_INC=$(dirname "$(readlink -f "$(command -v node 2>/dev/null || echo /x/x)")")/../include/node
CUBLAS_DIR=$(sed -n 's/^cublaslt_dir: \(\/.*\)/\1/p' "$OUT/setup.log")
[ -n "$CUBLAS_DIR" ] && export LD_LIBRARY_PATH=$CUBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
HAVE_NODE=0
command -v node >/dev/null && HAVE_NODE=1
if [ $DRY = 1 ] && [ "$(command -v node)" != "$NODE_DIR/bin/node" ]; then
  say "dry run: node is $(command -v node), not the carried one"; exit 1
fi

# ---------------------------------------------------------------- build (one call)
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
CUDA_FLAG=ON
[ $DRY = 1 ] && CUDA_FLAG=${DRY_CUDA:-OFF}  # the CPU stands in; CI's main build proves CUDA compiles
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
[ -f "$BUILD_DIR/CMakeCache.txt" ] && GEN=()  # keep the generator of an existing build
JOBS=$(nproc 2>/dev/null || echo 2)
TARGETS=(rargen rargen_optest)
[ "$CUDA_FLAG" = ON ] && TARGETS+=(cuda_ext_test)
build() {
  set -e
  cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DRARGEN_CUDA=$CUDA_FLAG \
    -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90-real}" -DCMAKE_JS_INC="$NODE_INC"
  cmake --build "$BUILD_DIR" --target "${TARGETS[@]}" -j "$JOBS"
}
run_stage build build 170 230 build
BUILD_RC=$?
ADDON_OK=0
if [ $BUILD_RC = 0 ] && [ -f "$BUILD_DIR/rargen.node" ] && [ $HAVE_NODE = 1 ]; then
  mkdir -p build/Release
  if [ -f build/Release/rargen.node ]; then mv -f build/Release/rargen.node "$SAVED"; fi
  cp "$BUILD_DIR/rargen.node" build/Release/rargen.node && touch build/Release/.rargen-gpu-sh && ADDON_OK=1
  node -e "const a=require('./build/Release/rargen.node'); console.log(JSON.stringify({build: a.buildInfo(), cuda: a.cudaStatus()}))" \
    > "$OUT/addon.json" 2>&1 || true
fi

# ---------------------------------------------------------------- (1) ops
if [ $BUILD_RC = 0 ]; then
  run_stage optest optest 40 190 "./$BUILD_DIR/rargen_optest" ${OPTEST_FILTER:+"$OPTEST_FILTER"}
  if [ -x "$BUILD_DIR/cuda_ext_test" ]; then
    run_stage ext optest 20 170 bash -c "'./$BUILD_DIR/cuda_ext_test' && echo '--- RARGEN_CUBLASLT=0 (built-in GEMM kernels)' && RARGEN_CUBLASLT=0 './$BUILD_DIR/cuda_ext_test'"
  else
    skip_stage ext "cuda_ext_test not built (CUDA $CUDA_FLAG)"
  fi
else
  skip_stage optest "build failed"
  skip_stage ext "build failed"
fi

# ---------------------------------------------------------------- (2) end-to-end tests
VITEST=(node node_modules/vitest/vitest.mjs run)
# budget:reserve (the time later stages keep); without the benchmark its 50 s is free
R=50
[ $TESTS_ONLY = 1 ] && R=0
# name:budget:reserve:test file
for t in rar:45:$((R + 75)):test/native/rar.test.ts vqgan:25:$((R + 50)):test/native/vqgan.test.ts \
         inception:20:$((R + 30)):test/gpu/inception.test.ts train:30:$R:test/train/native.test.ts; do
  IFS=: read -r name def res file <<< "$t"
  if [ $ADDON_OK = 1 ]; then
    RARGEN_CUDA_VERBOSE=1 run_stage "$name" vitest "$def" "$res" "${VITEST[@]}" "$file"
  else
    skip_stage "$name" "no addon (build rc $BUILD_RC, node $HAVE_NODE)"
  fi
done

# ---------------------------------------------------------------- (3) benchmarks
if [ $TESTS_ONLY = 1 ]; then
  skip_stage bench "--tests"
elif [ $ADDON_OK = 1 ]; then
  bench() {
    local dev=cuda preset=rar-b batch=${BENCH_BATCH:-128} warm=8
    [ $DRY = 1 ] && { dev=cpu; preset=tiny; batch=2; warm=1; }
    for dt in bf16 f32; do
      BENCH_DEVICE=$dev BENCH_WARMUP=$warm node bench/gpu/bench.mjs "$preset" "$batch" "$dt" || echo "rargen $preset $dt failed (rc $?)"
    done
    if [ -n "$PY" ] && "$PY" -c 'import torch' 2>/dev/null; then
      for dt in bf16 fp32; do
        (cd bench/peers && "$PY" torch_gpu.py --preset "$preset" --batches "$batch" --dtype $dt --device $dev \
           ) || echo "torch peer $preset $dt failed (rc $?)"
      done
    else
      echo "torch peer: skipped (no python3 with torch)"
    fi
  }
  RARGEN_CUDA_VERBOSE=1 run_stage bench bench 90 0 bench  # at least 50 s: the reserves above
else
  skip_stage bench "no addon"
fi

say "done in $(($(date +%s) - T_START))s; results: $OUT/gpu.json"
cat "$OUT/gpu.json"
exit $STAGE_RC_ALL
