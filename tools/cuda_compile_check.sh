#!/usr/bin/env bash
# CUDA compile check (make cuda-check; part of make test): compiles every source listed in
# CMakeLists.txt's SPECTRA_CUDA_SOURCES with nvcc to object files for sm_80 and sm_90 — on a machine
# with no GPU, no CUDA toolkit and a CPU build of torch. Each op has two CUDA files:
#   cpp/kernels/<op>.cu    the kernels and their launcher, torch-free: compiled against the repository's
#                          cpp/include and the CUDA headers only (no torch include path), so a torch,
#                          ATen or c10 include fails the check; its object must hold kernel launch stubs;
#   cpp/ops/<op>_cuda.cu   the ATen layer: compiled against the installed torch's headers too; it must
#                          hold the TORCH_LIBRARY_IMPL(spectra, CUDA, m) registration and no kernel.
# Nothing is linked or run: this proves the kernels AND their registration code compile, so a GPU
# build does not meet a syntax error first. Numerical checks are tests/ops/test_cuda_kernels.py, on a GPU.
#
# The toolchain comes from PyPI (NVIDIA's CUDA 13.0 component wheels), installed with
# `pip install --target build/cuda-toolchain`, never into the project's venv and never touching its
# torch; a second run reuses it (a stamp file records the pinned set). CUDA 13 is used because its
# nvidia-cuda-nvcc wheel ships bin/nvcc itself (nvidia-cuda-nvcc-cu12 12.8.93, for one, carries only
# ptxas and libnvvm); cicc (the device front end) is in nvidia-nvvm, the crt/ headers in nvidia-cuda-crt,
# cuda_runtime.h / cuda.h / mma.h in nvidia-cuda-runtime, CCCL in nvidia-cuda-cccl. ~104 MB download.
#
# Header note: the CPU wheel of torch ships the c10/cuda and ATen/cuda headers but not the one
# header CMake generates only in CUDA builds, c10/cuda/impl/cuda_cmake_macros.h. Its whole content
# is `#define C10_CUDA_BUILD_SHARED_LIBS`, which c10/cuda/CUDAMacros.h reads only on _WIN32; that
# header's own opt-out macro C10_CUDA_NO_CMAKE_CONFIGURE_FILE (there for ROCm builds) skips the
# include, so on Linux the code compiled is exactly what a CUDA build compiles. No header is stubbed:
# the rest are the torch wheel's and the CUDA wheels' own. The host compiler is the system g++
# (12.x here; nvcc 13.0 supports it, so no -allow-unsupported-compiler).
#
# Environment: PY (python with torch; default .venv/bin/python), SPECTRA_CUDA_TOOLCHAIN (install
# dir; default build/cuda-toolchain), SPECTRA_CUDA_CHECK_ARCHS (default "80 90"), SPECTRA_CUDA_CHECK_JOBS
# (parallel nvcc processes; default: number of CPUs, at most 3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
TOOLCHAIN="${SPECTRA_CUDA_TOOLCHAIN:-$ROOT/build/cuda-toolchain}"
OUT="$ROOT/build/cuda-check"
ARCHS="${SPECTRA_CUDA_CHECK_ARCHS:-80 90}"
PACKAGES=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)

fail() {
  echo "cuda-check: FAILED: $*" >&2
  exit 1
}

start=$(date +%s)
[ -x "$PY" ] || fail "no python at $PY (run 'make setup' first, or set PY=/path/to/python with torch installed)"

# ---- toolchain (cached) ----
stamp="$TOOLCHAIN/.spectra-toolchain"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${PACKAGES[*]}" ] && [ -x "$TOOLCHAIN/nvidia/cu13/bin/nvcc" ]; then
  echo "cuda-check: reusing the CUDA toolchain in ${TOOLCHAIN#"$ROOT"/}"
else
  echo "cuda-check: installing the CUDA toolchain from PyPI into ${TOOLCHAIN#"$ROOT"/} (~104 MB download):"
  echo "  ${PACKAGES[*]}"
  rm -rf "$TOOLCHAIN" "$TOOLCHAIN.partial"
  mkdir -p "$(dirname "$TOOLCHAIN")"
  # --no-deps: the list above is the complete set nvcc needs (their own Requires-Dist are within it).
  "$PY" -m pip install --disable-pip-version-check --no-input -q --no-deps --no-compile \
    --target "$TOOLCHAIN.partial" "${PACKAGES[@]}" ||
    fail "pip could not install the CUDA toolchain (${PACKAGES[*]}); is PyPI reachable?"
  echo "${PACKAGES[*]}" >"$TOOLCHAIN.partial/.spectra-toolchain"
  mv "$TOOLCHAIN.partial" "$TOOLCHAIN"
fi
CUDA_HOME="$TOOLCHAIN/nvidia/cu13"
NVCC="$CUDA_HOME/bin/nvcc"
for f in "$NVCC" "$CUDA_HOME/nvvm/bin/cicc" "$CUDA_HOME/include/cuda_runtime.h" "$CUDA_HOME/include/crt/host_config.h" \
         "$CUDA_HOME/include/cccl/cuda/std/version"; do
  [ -e "$f" ] || fail "the toolchain in $TOOLCHAIN lacks $f; delete that folder and rerun"
done
chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME/nvvm/bin/cicc" 2>/dev/null || true
nvcc_version=$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
[ -n "$nvcc_version" ] || fail "$NVCC does not run"

# ---- torch's headers and ABI flag ----
mapfile -t torch_info < <("$PY" - <<'EOF'
import torch
from torch.utils.cpp_extension import include_paths
print(torch.__version__)
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
for p in include_paths():
    print(p)
EOF
) || fail "'import torch' failed with $PY"
torch_version="${torch_info[0]}"
cxx11_abi="${torch_info[1]}"
torch_includes=()
for p in "${torch_info[@]:2}"; do torch_includes+=(-isystem "$p"); done

# ---- the sources: exactly CMakeLists.txt's SPECTRA_CUDA_SOURCES ----
mapfile -t sources < <("$PY" - <<'EOF'
import re
text = open("CMakeLists.txt").read()
m = re.search(r"set\(SPECTRA_CUDA_SOURCES([^)]*)\)", text)
print("\n".join(re.sub(r"#[^\n]*", "", m.group(1)).split()) if m else "")
EOF
)

[ "${#sources[@]}" -gt 0 ] && [ -n "${sources[0]}" ] || fail "CMakeLists.txt lists no SPECTRA_CUDA_SOURCES"
for s in "${sources[@]}"; do
  [ -f "$s" ] || fail "CMakeLists.txt lists $s in SPECTRA_CUDA_SOURCES but the file does not exist"
done

host_cxx="${CXX:-g++}"
command -v "$host_cxx" >/dev/null || fail "no host C++ compiler '$host_cxx'"
echo "cuda-check: nvcc $nvcc_version, host $("$host_cxx" --version | head -1), torch $torch_version, sm_${ARCHS// /, sm_}"

gencode=()
for a in $ARCHS; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
# The flags CMake's CUDA build uses for the same TUs (CMAKE_CUDA_STANDARD 20, TORCH_CXX_FLAGS' ABI
# define, the _core target's definitions and include directories), plus the header note above. The
# torch-free kernels get the common flags only.
common_flags=(
  -c -std=c++20 -O3 -ccbin "$host_cxx" -Xcompiler -fPIC "${gencode[@]}"
  -I "$ROOT/cpp/include" -I "$CUDA_HOME/include" -isystem "$CUDA_HOME/include/cccl"
  --resource-usage
)
aten_flags=(
  -D_GLIBCXX_USE_CXX11_ABI="$cxx11_abi" -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_core
  -DSPECTRA_WITH_CUDA -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE
  -I "$ROOT/cpp" "${torch_includes[@]}"
)
# kernels: cpp/kernels/<op>.cu; aten: cpp/ops/<op>_cuda.cu
role() {
  case "$1" in
    cpp/kernels/*.cu) echo kernels ;;
    cpp/ops/*_cuda.cu) echo aten ;;
    *) echo other ;;
  esac
}
for s in "${sources[@]}"; do
  case "$(role "$s")" in
    kernels)
      ! grep -qE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](torch|ATen|c10)/' "$s" ||
        fail "$s includes a torch/ATen/c10 header; the kernels in cpp/kernels/ are torch-free" ;;
    aten) ;;
    *) fail "$s: a CUDA source is either cpp/kernels/<op>.cu (torch-free kernels) or cpp/ops/<op>_cuda.cu (ATen layer)" ;;
  esac
done
# An object's name: its path below cpp/ with / replaced (kernels_vec_stats.o, ops_vec_stats_cuda.o).
stem() {
  local rel="${1#cpp/}"
  rel="${rel%.cu}"
  echo "${rel//\//_}"
}

mkdir -p "$OUT"
rm -f "$OUT"/*.o "$OUT"/*.log
jobs="${SPECTRA_CUDA_CHECK_JOBS:-$(nproc)}"
[ "$jobs" -le 3 ] || jobs=3
echo "cuda-check: compiling ${#sources[@]} file(s), $jobs at a time"
pids=()
declare -A pid_source
for s in "${sources[@]}"; do
  obj="$OUT/$(stem "$s").o"
  log="$OUT/$(stem "$s").log"
  flags=("${common_flags[@]}")
  if [ "$(role "$s")" = aten ]; then flags+=("${aten_flags[@]}"); fi
  (
    t0=$(date +%s)
    if PATH="$CUDA_HOME/bin:$PATH" "$NVCC" "${flags[@]}" "$s" -o "$obj" >"$log" 2>&1; then
      echo "  ok    $s -> ${obj#"$ROOT"/} ($(($(date +%s) - t0)) s, $(du -k "$obj" | cut -f1) KiB)"
    else
      echo "  FAIL  $s ($(($(date +%s) - t0)) s); nvcc said:"
      sed 's/^/        /' "$log"
      exit 1
    fi
  ) &
  pids+=($!)
  pid_source[$!]="$s"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 0.5; done
done
failed=()
for pid in "${pids[@]}"; do
  wait "$pid" || failed+=("${pid_source[$pid]}")
done
[ "${#failed[@]}" -eq 0 ] || fail "nvcc could not compile: ${failed[*]}"

# ---- what was built: kernel objects hold device code and no torch; ATen objects register and launch none ----
for s in "${sources[@]}"; do
  base="$(stem "$s")"
  obj="$OUT/$base.o"
  log="$OUT/$base.log"
  symbols=$(nm -C "$obj")  # (not piped into grep -q: with pipefail, nm's SIGPIPE would fail the test)
  kernels=$(grep -c "__device_stub__.*::__handle$" <<<"$symbols" || true)  # one per kernel
  if [ "$(role "$s")" = aten ]; then
    grep -q "TORCH_LIBRARY_IMPL(spectra, CUDA" "$s" || fail "$s has no TORCH_LIBRARY_IMPL(spectra, CUDA, m) block"
    grep -q "TORCH_LIBRARY_IMPL_static_init_spectra_CUDA" <<<"$symbols" ||
      fail "$obj has no TORCH_LIBRARY_IMPL(spectra, CUDA) registration symbol"
    [ "$kernels" -eq 0 ] || fail "$s defines $kernels kernel(s); kernels belong in the torch-free cpp/kernels/"
    echo "  $base: registers the op's CUDA implementation (TORCH_LIBRARY_IMPL), no kernel"
  else
    [ "$kernels" -gt 0 ] || fail "$obj holds no kernel launch stubs"
    echo "  $base: $kernels kernels; registers, stack and spills per kernel (ptxas, sm_${ARCHS##* }):"
    # ptxas reports per kernel and arch: "Compiling entry function 'X' for 'sm_NN'", then its
    # stack/spill and register lines. Printed for the last arch, names demangled and shortened.
    awk -v arch="'sm_${ARCHS##* }'" '
      /Compiling entry function/ { name = $0; sub(/.*function '"'"'/, "", name); sub(/'"'"'.*/, "", name); keep = index($0, arch) > 0 }
      keep && /bytes spill/ { split($0, a, ","); spill = a[2] "," a[3]; gsub(/^ +/, "", spill) }
      keep && /Used [0-9]+ registers/ { line = $0; sub(/^ptxas info *: */, "", line); print name "\t" line "; " spill }
    ' "$log" | while IFS=$'\t' read -r mangled info; do
      short=$(c++filt "$mangled" | sed -E 's/^void //; s/spectra::(cuda_kernels::\(anonymous namespace\)::)?//g; s/\(.*$//')
      printf '      %-52s %s\n' "$short" "$info"
    done
  fi
  if grep -qi "warning" "$log"; then
    echo "  $base: nvcc warnings:"
    grep -i "warning" "$log" | sort -u | sed 's/^/      /'
  fi
done
echo "cuda-check: OK, ${#sources[@]} CUDA source(s) compiled in $(($(date +%s) - start)) s (objects and logs in ${OUT#"$ROOT"/})"
