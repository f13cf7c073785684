# Tests of cmake/SpectraCudaArchitectures.cmake (ctest: cuda_architectures), run in script mode:
#   cmake -DTORCH_CMAKE_PREFIX=<torch.utils.cmake_prefix_path> -P cmake/tests/cuda_architectures.cmake
# The -gencode flags come from torch's own CUDA_SELECT_NVCC_ARCH_FLAGS (what find_package(Torch) runs
# in a CUDA build of torch), so the whole chain request -> TORCH_CUDA_ARCH_LIST -> nvcc flags -> checks
# is exercised without CUDA. A case that must fail reruns this script with -DCASE=<name>.
cmake_minimum_required(VERSION 3.24)
include("${CMAKE_CURRENT_LIST_DIR}/../SpectraCudaArchitectures.cmake")

set(_select "${TORCH_CMAKE_PREFIX}/Caffe2/Modules_CUDA_fix/upstream/FindCUDA/select_compute_arch.cmake")
if(NOT EXISTS "${_select}")
  message(FATAL_ERROR "torch's select_compute_arch.cmake is not at ${_select}; pass -DTORCH_CMAKE_PREFIX")
endif()
include("${_select}")

# TORCH_CUDA_ARCH_LIST -> "sm_80;sm_90|compute_90", through torch's flag generation and the checks.
function(targets_of out arch_list)
  cuda_select_nvcc_arch_flags(flags ${arch_list})
  string(REPLACE ";" " " flags "${flags}")  # as they end up in CMAKE_CUDA_FLAGS
  spectra_cuda_gencode_targets("${flags}" real ptx)
  set(${out} "${real}|${ptx}" PARENT_SCOPE)
endfunction()

function(expect what got want)
  if(NOT "${got}" STREQUAL "${want}")
    message(FATAL_ERROR "${what}: got '${got}', expected '${want}'")
  endif()
endfunction()

if(DEFINED CASE)  # one case that must stop with a fatal error
  if(CASE STREQUAL "ptx_7x")
    targets_of(t "7.5+PTX;8.0")
  elseif(CASE STREQUAL "sm80_from_compute_75")
    targets_of(t "8.0(7.5)")
  elseif(CASE STREQUAL "cmake_all")
    spectra_torch_arch_list_from_cmake(l "all")
  elseif(CASE STREQUAL "cmake_garbage")
    spectra_torch_arch_list_from_cmake(l "sm_80")
  endif()
  return()
endif()

# ---- CMAKE_CUDA_ARCHITECTURES -> TORCH_CUDA_ARCH_LIST ----
spectra_torch_arch_list_from_cmake(l "80;90")
expect("80;90" "${l}" "8.0+PTX;9.0+PTX")
spectra_torch_arch_list_from_cmake(l "80-real;90a-real;100-virtual;120f")
expect("mixed" "${l}" "8.0;9.0a;10.0+PTX;12.0f+PTX")

# ---- precedence ----
spectra_resolve_cuda_arch_list(l s CMAKE_ARCHS "90" TORCH_LIST "9.0" DETECTED "8.0")
expect("TORCH_CUDA_ARCH_LIST first (same request in both notations)" "${l}|${s}" "9.0|TORCH_CUDA_ARCH_LIST")
spectra_resolve_cuda_arch_list(l s CMAKE_ARCHS "80" TORCH_LIST "8.0 9.0+PTX" DETECTED "8.6")
expect("TORCH_CUDA_ARCH_LIST, spaces, a warning" "${l}|${s}" "8.0;9.0+PTX|TORCH_CUDA_ARCH_LIST")
spectra_resolve_cuda_arch_list(l s CMAKE_ARCHS "90-real" TORCH_LIST "" DETECTED "8.0")
expect("CMAKE_CUDA_ARCHITECTURES" "${l}" "9.0")
spectra_resolve_cuda_arch_list(l s CMAKE_ARCHS "native" TORCH_LIST "" DETECTED "9.0;9.0")
expect("native" "${l}" "9.0")
spectra_resolve_cuda_arch_list(l s DETECTED "8.9")
expect("detected GPU" "${l}" "8.9")
spectra_resolve_cuda_arch_list(l s CMAKE_ARCHS "" TORCH_LIST "" DETECTED "")
expect("default" "${l}" "8.0;9.0+PTX")

# ---- what nvcc is asked to build (torch's flags), and the checks ----
targets_of(t "${l}")
expect("default targets" "${t}" "sm_80;sm_90|compute_90")
targets_of(t "9.0")
expect("9.0" "${t}" "sm_90|")
targets_of(t "7.5;8.0;8.6;9.0a;10.0+PTX")
expect("several" "${t}" "sm_75;sm_80;sm_86;sm_90a;sm_100|compute_100")
spectra_torch_arch_list_from_cmake(l "80-real;90")
targets_of(t "${l}")
expect("from CMake 80-real;90" "${t}" "sm_80;sm_90|compute_90")
spectra_cuda_gencode_targets("--generate-code=arch=compute_90,code=[compute_90,sm_90]" real ptx)
expect("CMake's notation" "${real}|${ptx}" "sm_90|compute_90")

foreach(case ptx_7x sm80_from_compute_75 cmake_all cmake_garbage)
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -DTORCH_CMAKE_PREFIX=${TORCH_CMAKE_PREFIX} -DCASE=${case} -P "${CMAKE_CURRENT_LIST_FILE}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT err MATCHES "spectra: ")
    message(FATAL_ERROR "case ${case} should have failed with a spectra error; rc=${rc}: ${err}")
  endif()
endforeach()
message(STATUS "cuda_architectures: all checks passed")
