#!/usr/bin/env bash
# make gpu-check: the one-command GPU validation of spectra's CUDA kernels, < 8 min on one H100/H200.
#
#   bash tools/gpu/gpu_check.sh                 # on a GPU machine (what `make gpu-check` runs)
#   bash tools/gpu/gpu_check.sh --cpu-dry-run   # the whole flow on a CPU machine (WITH_CUDA=OFF)
#
# Needs on the GPU machine (no network: no apt, no pip): python3 with a CUDA torch and transformers,
# nvcc, cmake, ninja, scikit-build-core, pytest. Eigen 3.4 and the Python 3.12 headers come from
# tools/gpu/deps.tar.gz where the machine lacks them (see tools/gpu/README.md). Never runs `make setup`.
#
# Steps, each under `timeout`, none stopping the rest; total budget BUDGET seconds (default 465):
#   1 env       nvidia-smi, nvcc/cmake/ninja, python/torch/transformers versions (env_report.py)
#   2 build     CMake, out of tree into WORK: SPECTRA_WITH_CUDA=ON (every CUDA kernel),
#               SPECTRA_BUILD_TESTS=OFF, TORCH_CUDA_ARCH_LIST and CMAKE_CUDA_ARCHITECTURES for the
#               present GPU (torch's CMake only reads the former); the module is staged with a copy
#               of python/spectra in WORK (the checkout is never written). Fallback when the
#               configure fails: pip install --no-build-isolation --no-deps --no-index -e .
#   3 compare   compare_ops.py: CUDA kernel, torch path (CUDA and CPU) vs the CPU op, every op,
#               every mask option, fp16/bf16/fp32/fp64
#   4 pytest    tests/ops/test_cuda_kernels.py: vec_stats + plasticity + opcheck, then attn_row_stats
#   5 sanitize  compute-sanitizer memcheck and racecheck on sanitize_inputs.py (small inputs)
#   6 bench     benchmarks/cuda_metrics_vs_sdpa.py at T = 4K and 32K: kernel, torch path, SDPA
#   7 profile   profile_check.py: spectra.profile of a random Llama-3-8B-shaped bf16 model, T = 512, 4096
#   8 bench     T = 128K, with the time left
#   9 verdict   summarize.py: which ops' kernels passed everything, and the CMake line to paste
# Output: OUT (default build/gpu-check), 8 files: summary.txt env.log build.log tests.log
# sanitizer.log bench.log profile.log results.json.
# Knobs (environment): OUT, WORK, BUDGET, PY (default python3; .venv/bin/python in a dry run), JOBS,
# WITH_CUDA (ON; OFF = --cpu-dry-run), CUDA_ARCH (e.g. 9.0; default: the GPU's), DRY_RUN_COMPILE=1
# (compile in a dry run too, ~minutes on 2 cores), GPU_CHECK_CARRY=1 (use deps.tar.gz even where the
# machine has Eigen).
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT" || exit 2
for arg in "$@"; do
  case "$arg" in
    --cpu-dry-run) WITH_CUDA=OFF ;;
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (use --cpu-dry-run or --help)" >&2; exit 2 ;;
  esac
done
WITH_CUDA="${WITH_CUDA:-ON}"
if [ "$WITH_CUDA" = OFF ]; then DRY=1; else DRY=""; fi
if [ -z "${PY:-}" ]; then
  if [ -n "$DRY" ] && [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
OUT="${OUT:-$ROOT/build/gpu-check}"
BUDGET="${BUDGET:-465}"
JOBS="${JOBS:-$(nproc)}"
WORK="${WORK:-$(mktemp -d /tmp/spectra-gpu-check.XXXXXX)}"
BUILD="$WORK/build"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1
mkdir -p "$OUT" "$WORK"
rm -f "$OUT"/summary.txt "$OUT"/{env,build,tests,sanitizer,bench,profile}.log "$OUT"/results.json
SUMMARY="$OUT/summary.txt"
echo "spectra gpu-check $(date -u +%FT%TZ) on $(hostname): WITH_CUDA=$WITH_CUDA${DRY:+ (CPU dry run)}, budget ${BUDGET}s, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-git)" >"$SUMMARY"

elapsed() { echo $(($(date +%s) - T0)); }
note() { printf '%-48s %s\n' "$1" "$2" | tee -a "$SUMMARY"; }
# step NAME CAP RESERVE LOG cmd...: runs cmd under timeout min(CAP, time left - RESERVE) seconds (the
# reserve keeps time for the steps after it), appends its output to LOG and its verdict to the summary.
step() {
  local name=$1 cap=$2 reserve=$3 log=$4
  shift 4
  local avail=$((BUDGET - $(elapsed) - reserve))
  local t=$((cap < avail ? cap : avail))
  if [ "$t" -lt 10 ]; then
    note "$name" "SKIPPED (no time left)"
    return 98
  fi
  local s rc verdict
  s=$(date +%s)
  echo "===== $name  (timeout ${t}s, at +$(elapsed)s): $*" >>"$log"
  timeout -k 10 "$t" "$@" >>"$log" 2>&1
  rc=$?
  verdict="ok"
  [ "$rc" -ne 0 ] && verdict="FAIL (rc=$rc)"
  { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && verdict="TIMEOUT (${t}s)"
  echo "===== $name: $verdict after $(($(date +%s) - s))s" >>"$log"
  note "$name" "$(printf '%-16s %4ss  (%s)' "$verdict" "$(($(date +%s) - s))" "$(basename "$log")")"
  return "$rc"
}
indent() { cut -c1-"${1:-300}" | sed 's/^/    /' | tee -a "$SUMMARY"; }

# ---- 1 env ----------------------------------------------------------------------------------------
NVCC=""
for c in "${CUDACXX:-}" /usr/local/cuda/bin/nvcc "$(command -v nvcc 2>/dev/null)" /usr/local/cuda-13*/bin/nvcc /opt/cuda/bin/nvcc; do
  if [ -n "$c" ] && [ -x "$c" ]; then NVCC=$c; break; fi
done
if [ -n "$NVCC" ] && [ -z "$DRY" ]; then
  case "$NVCC" in */bin/nvcc) export CUDA_HOME="${NVCC%/bin/nvcc}" CUDA_PATH="${NVCC%/bin/nvcc}" ;; esac
  PATH="$(dirname "$NVCC"):$PATH"
  export PATH CUDACXX="$NVCC"
fi
PYEXE=$("$PY" -c 'import sys; print(sys.executable)' 2>/dev/null || echo "$PY")
PATH="$(dirname "$PYEXE"):$PATH"  # the interpreter's cmake / ninja (pip packages) first
export PATH
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)
DEPS="$WORK/deps"
EIGEN_ARG=()
SYS_EIGEN=""
for f in /usr/share/eigen3/cmake/Eigen3Config.cmake /usr/lib/cmake/eigen3/Eigen3Config.cmake \
  /usr/local/share/eigen3/cmake/Eigen3Config.cmake /usr/lib/x86_64-linux-gnu/cmake/eigen3/Eigen3Config.cmake; do
  [ -f "$f" ] && SYS_EIGEN=$f && break
done
USE_CARRY="${GPU_CHECK_CARRY:-$DRY}"  # a dry run uses the carry, to prove it configures
if [ -f "$HERE/deps.tar.gz" ]; then mkdir -p "$DEPS" && tar xzf "$HERE/deps.tar.gz" -C "$DEPS"; fi
if { [ -z "$SYS_EIGEN" ] || [ -n "$USE_CARRY" ]; } && [ -d "$DEPS/eigen" ]; then
  EIGEN_ARG=(-DEigen3_DIR="$DEPS/eigen/share/eigen3/cmake")
fi
PYINC_ARG=()
if [ ! -f "$PYINC/Python.h" ] && [ "$PYVER" = 3.12 ] && [ -f "$DEPS/python3.12/Python.h" ]; then
  PYINC_ARG=(-DPython_INCLUDE_DIR="$DEPS/python3.12")
fi
ARCH="${CUDA_ARCH:-$("$PY" -c 'import torch; c = torch.cuda.get_device_capability(0) if torch.cuda.is_available() else (9, 0); print("%d.%d" % c)' 2>/dev/null || echo 9.0)}"
export TORCH_CUDA_ARCH_LIST="$ARCH"  # torch's cuda.cmake sets CMAKE_CUDA_ARCHITECTURES OFF and reads this

env_info() {
  echo "date $(date -u +%FT%TZ)  host $(hostname)  nproc $(nproc)  root $ROOT  work $WORK"
  if [ -z "$DRY" ]; then
    timeout 20 nvidia-smi || echo "nvidia-smi failed"
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.memory --format=csv || true
  fi
  timeout 60 "$PY" "$HERE/env_report.py"
  echo "nvcc: ${NVCC:-NOT FOUND}  CUDA_HOME=${CUDA_HOME:-}"
  [ -n "$NVCC" ] && timeout 20 "$NVCC" --version | tail -2
  echo "cmake: $(command -v cmake) $(cmake --version 2>/dev/null | head -1)"
  echo "ninja: $(command -v ninja) $(ninja --version 2>/dev/null)"
  echo "g++: $(g++ --version 2>/dev/null | head -1)"
  echo "compute-sanitizer: $(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" 2>/dev/null)"
  echo "eigen: system ${SYS_EIGEN:-none}; cmake arg: ${EIGEN_ARG[*]:-(system)}"
  echo "python headers: $PYINC; cmake arg: ${PYINC_ARG[*]:-(system)}"
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  free -g | head -2
  df -h /tmp | tail -1
}
s1=$(date +%s)
env_info >"$OUT/env.log" 2>&1
note "1 env" "$(printf '%-16s %4ss  (env.log)' done "$(($(date +%s) - s1))")"
grep -E "^(python [0-9]|torch [0-9]|gpu [0-9]|nvcc:|cmake:|  transformers|eigen:|python headers:|TORCH_CUDA)" "$OUT/env.log" | indent 200

# ---- 2 build --------------------------------------------------------------------------------------
ARCH_NUM="${ARCH/./}"
CMAKE_ARGS=(-S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPECTRA_WITH_CUDA="$WITH_CUDA"
  -DSPECTRA_BUILD_TESTS=OFF -DTORCH_CUDA_ARCH_LIST="$ARCH" -DCMAKE_CUDA_ARCHITECTURES="$ARCH_NUM"
  -DPython_EXECUTABLE="$PYEXE" "${EIGEN_ARG[@]}" "${PYINC_ARG[@]}")
[ -n "$NVCC" ] && [ -z "$DRY" ] && CMAKE_ARGS+=(-DCMAKE_CUDA_COMPILER="$NVCC")
BUILT=""
CONFIGURED=""
step "2a build: cmake configure" 100 360 "$OUT/build.log" cmake "${CMAKE_ARGS[@]}" && CONFIGURED=1
if [ -n "$DRY" ] && [ -z "${DRY_RUN_COMPILE:-}" ]; then
  note "2b build: compile _core" "skipped: CPU dry run (DRY_RUN_COMPILE=1 compiles); the checks use $PY's spectra"
  BUILT="dry-run"
elif [ -n "$CONFIGURED" ]; then
  if step "2b build: compile _core (ninja -j$JOBS)" "${BUILD_CAP:-240}" 230 "$OUT/build.log" \
    cmake --build "$BUILD" -j "$JOBS" --target _core; then
    so=$(ls "$BUILD"/_core*.so 2>/dev/null | head -1)
    if [ -n "$so" ] && [ -z "$DRY" ]; then
      # A copy of the package with the new module, first on PYTHONPATH: the checkout is never written.
      mkdir -p "$WORK/pkg" && cp -r "$ROOT/python/spectra" "$WORK/pkg/" &&
        find "$WORK/pkg" \( -name '__pycache__' -o -name '_core*.so' \) -prune -exec rm -rf {} + &&
        cp "$so" "$WORK/pkg/spectra/" && BUILT="direct"
      export PYTHONPATH="$WORK/pkg${PYTHONPATH:+:$PYTHONPATH}"
    elif [ -n "$so" ]; then
      BUILT="dry-run"
    fi
  fi
else
  echo "cmake configure failed; falling back to pip (editable, no network, no dependencies)" | tee -a "$OUT/build.log"
  PIP_ARGS=(install --no-build-isolation --no-deps --no-index -e "$ROOT" -C build-dir="$WORK/pip-build"
    -C cmake.define.SPECTRA_WITH_CUDA="$WITH_CUDA" -C cmake.define.SPECTRA_BUILD_TESTS=OFF
    -C cmake.define.TORCH_CUDA_ARCH_LIST="$ARCH" -C cmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCH_NUM")
  for a in "${EIGEN_ARG[@]}" "${PYINC_ARG[@]}"; do PIP_ARGS+=(-C "cmake.define.${a#-D}"); done
  [ -n "$NVCC" ] && PIP_ARGS+=(-C "cmake.define.CMAKE_CUDA_COMPILER=$NVCC")
  step "2c build: pip editable (fallback)" "${BUILD_CAP:-240}" 230 "$OUT/build.log" "$PY" -m pip "${PIP_ARGS[@]}" && BUILT="pip"
fi
{
  echo "----- build facts"
  grep -E "Added CUDA NVCC flags|not compatible with .CMAKE_CUDA_ARCHITECTURES|CUDA kernels (ON|OFF)|Found Python|Found Eigen" "$OUT/build.log" | sort -u
  grep -E "^(Eigen3_DIR|Python_INCLUDE_DIR|Python_EXECUTABLE|TORCH_CUDA_ARCH_LIST|CMAKE_CUDA_ARCHITECTURES|SPECTRA_WITH_CUDA)[:=]" "$BUILD/CMakeCache.txt" 2>/dev/null
  so=$(ls "$BUILD"/_core*.so 2>/dev/null | head -1)
  if [ -n "$so" ]; then
    ls -la "$so"
    cuobj=$(command -v cuobjdump || echo "${CUDA_HOME:-/usr/local/cuda}/bin/cuobjdump")
    [ -x "$cuobj" ] && "$cuobj" --list-elf "$so" 2>&1 | head -20
    ldd "$so" | grep -Ei "cuda|torch|c10" | head -12
  fi
} >>"$OUT/build.log" 2>&1
echo "${BUILT:-FAILED}" >"$WORK/build.txt"
note "build" "${BUILT:-FAILED}"
grep -E "Added CUDA NVCC flags|not compatible with .CMAKE_CUDA_ARCH|ELF file|CUDA kernels (ON|OFF)|^Eigen3_DIR" "$OUT/build.log" | sort -u | head -8 | indent
SPECTRA_AT=$("$PY" -c 'import spectra; print(spectra.__file__)' 2>&1 | tail -1)
note "spectra imported from" "$SPECTRA_AT"

# ---- 3 compare, 4 pytest --------------------------------------------------------------------------
DEVICE=cuda
[ -n "$DRY" ] && DEVICE=cpu
COMPARE=("$PY" "$HERE/compare_ops.py" --device "$DEVICE" --json "$WORK/compare.json")
[ -n "$DRY" ] && COMPARE+=(--quick)
step "3 compare: CUDA kernel / torch path / CPU op" 75 280 "$OUT/tests.log" "${COMPARE[@]}"
grep -E "^(COMPARE|backend switch|cuda_kernel: skipped|torch_cuda: skipped)" "$OUT/tests.log" | indent

PYTEST=("$PY" -m pytest tests/ops/test_cuda_kernels.py -q -p no:cacheprovider -rfEs)
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout=120)
step "4a pytest: vec_stats, plasticity, opcheck" 75 220 "$OUT/tests.log" \
  "${PYTEST[@]}" --junitxml="$WORK/pytest-other.xml" -k "not test_attn_row_stats"
grep -E "^[0-9]+ (passed|failed|skipped)|^=+ .*(passed|failed|skipped|error)" "$OUT/tests.log" | tail -1 | indent
step "4b pytest: attn_row_stats" 150 150 "$OUT/tests.log" \
  "${PYTEST[@]}" --junitxml="$WORK/pytest-attn.xml" --maxfail=40 -k "test_attn_row_stats"
grep -E "^(FAILED|ERROR) " "$OUT/tests.log" | head -8 | indent
grep -E "^[0-9]+ (passed|failed|skipped)|^=+ .*(passed|failed|skipped|error)" "$OUT/tests.log" | tail -1 | indent

# ---- 5 compute-sanitizer --------------------------------------------------------------------------
SAN=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" 2>/dev/null)
if [ -n "$DRY" ]; then
  note "5 compute-sanitizer" "skipped: no CUDA (inputs run on the CPU instead)"
  step "5 sanitizer inputs on the CPU" 60 150 "$OUT/sanitizer.log" "$PY" "$HERE/sanitize_inputs.py" --device cpu
elif [ -z "$SAN" ]; then
  note "5 compute-sanitizer" "NOT FOUND"
else
  for tool in memcheck racecheck; do
    # Without the caching allocator every tensor is its own cudaMalloc, so a read past its end is seen.
    step "5 compute-sanitizer $tool" 70 $([ $tool = memcheck ] && echo 140 || echo 120) "$WORK/sanitizer-$tool.log" \
      env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SAN" --tool "$tool" --report-api-errors no --print-limit 30 \
      "$PY" "$HERE/sanitize_inputs.py" --device cuda
    cat "$WORK/sanitizer-$tool.log" >>"$OUT/sanitizer.log"
  done
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|SANITIZE-RUN-DONE|Device not supported" "$OUT/sanitizer.log" | head -8 | indent
fi

# ---- 6 bench 4K/32K, 7 profile, 8 bench 128K ------------------------------------------------------
BENCH=("$PY" benchmarks/cuda_metrics_vs_sdpa.py)
BENCH_NAME="6 bench vs SDPA, bf16, T=4K,32K"
[ -n "$DRY" ] && BENCH_NAME="6 bench vs SDPA (skipped: no CUDA; script ran)"
step "$BENCH_NAME" 75 130 "$OUT/bench.log" "${BENCH[@]}" --lengths 4096 32768 --json "$WORK/bench.json"
grep -E "^ *[0-9]+ +(bf16|fp16)|^ +T |needs a CUDA|no CUDA kernels|nothing|Error" "$OUT/bench.log" | head -8 | indent 260

PROFILE=("$PY" "$HERE/profile_check.py" --json "$WORK/profile.json")
if [ -n "$DRY" ]; then PROFILE+=(--device cpu --tiny --lengths 64 256); else PROFILE+=(--device cuda --lengths 512 4096); fi
PROFILE_NAME="7 profile Llama-3-8B-shaped bf16, T=512,4096"
[ -n "$DRY" ] && PROFILE_NAME="7 profile tiny Llama on the CPU, T=64,256"
step "$PROFILE_NAME" 130 15 "$OUT/profile.log" "${PROFILE[@]}"
grep -E "^(model:|T=)|Error" "$OUT/profile.log" | head -16 | indent 400

if [ -z "$DRY" ]; then
  step "8 bench vs SDPA, bf16, T=128K" 90 5 "$OUT/bench.log" "${BENCH[@]}" --lengths 131072 --warmup 1 --repeats 1 \
    --json "$WORK/bench128k.json"
  grep -E "^ *131072 " "$OUT/bench.log" | indent 260
  if [ -f "$WORK/bench128k.json" ]; then  # one bench.json with every row
    "$PY" -c 'import json, sys; a, b = (json.load(open(p)) for p in sys.argv[1:3]); a.setdefault("rows", []).extend(b["rows"]); json.dump(a, open(sys.argv[1], "w"), indent=1)' \
      "$WORK/bench.json" "$WORK/bench128k.json" 2>/dev/null || cp "$WORK/bench128k.json" "$WORK/bench.json"
  fi
else
  note "8 bench vs SDPA, T=128K" "skipped: no CUDA"
fi

# ---- 9 verdict ------------------------------------------------------------------------------------
timeout 30 "$PY" "$HERE/summarize.py" "$WORK" "$OUT" >/dev/null 2>>"$SUMMARY" || echo "summarize.py failed" | tee -a "$SUMMARY"
echo "total: $(elapsed)s of budget ${BUDGET}s; files in $OUT" | tee -a "$SUMMARY"
echo "================ summary"
cat "$SUMMARY"
[ -z "${KEEP_WORK:-}" ] && case "$WORK" in /tmp/spectra-gpu-check.*) rm -rf "$WORK" ;; esac
exit 0
