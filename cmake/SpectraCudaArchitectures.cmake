# Which GPU architectures the CUDA kernels are compiled for.
#
# torch's CMake (Caffe2's public/cuda.cmake, run by find_package(Torch) in CUDA builds of torch) takes
# the -gencode flags from TORCH_CUDA_ARCH_LIST (a CMake variable, else the environment) and sets
# CMAKE_CUDA_ARCHITECTURES to OFF, so CMake's own architecture setting never reaches nvcc; an unset or
# empty TORCH_CUDA_ARCH_LIST makes it detect the GPUs by compiling and running a probe, and falls back to
# its "Common" list (from sm_50 up, which CUDA 13 no longer compiles) on a machine without one. spectra
# therefore always hands torch an explicit TORCH_CUDA_ARCH_LIST:
#
#   1. TORCH_CUDA_ARCH_LIST (CMake variable, else environment), as torch reads it;
#   2. CMAKE_CUDA_ARCHITECTURES, mapped to torch's notation (native: as in 3); when both are given and
#      name different real architectures, a warning says that TORCH_CUDA_ARCH_LIST wins;
#   3. the compute capabilities of the GPUs torch sees on the build machine ("native");
#   4. 8.0;9.0+PTX: sm_80 code (which also runs on sm_86 and sm_89), sm_90 code, and compute_90 PTX that
#      newer GPUs compile at load time.
#
# After find_package(Torch), spectra_cuda_gencode_targets reads back the -gencode flags torch added and
# refuses code that an sm_80+ GPU could end up running while compiled for an older architecture: the
# kernels take their sm_80 paths (tensor cores) by the device's compute capability at run time, and
# device code compiled for compute_7x has those paths compiled out (attn_row_stats traps there).
#
# Only functions here; CMakeLists.txt calls them. cmake/tests/cuda_architectures.cmake tests them
# (ctest), together with torch's own flag generation.

# The TORCH_CUDA_ARCH_LIST entries of a CMAKE_CUDA_ARCHITECTURES list: 80 -> 8.0+PTX (real code and
# PTX), 80-real -> 8.0, 90a -> 9.0a+PTX. NN-virtual (PTX alone) has no torch notation: it becomes
# N.N+PTX, which also compiles sm_NN code.
function(spectra_torch_arch_list_from_cmake out archs)
  set(result "")
  foreach(arch IN LISTS archs)
    if(arch MATCHES "^([0-9]+)([0-9])([af]?)(-real|-virtual)?$")
      set(entry "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
      if(CMAKE_MATCH_4 STREQUAL "-real")
        list(APPEND result "${entry}")
      else()
        list(APPEND result "${entry}+PTX")
      endif()
    elseif(arch STREQUAL "native")
      message(FATAL_ERROR "spectra: CMAKE_CUDA_ARCHITECTURES='${archs}': native stands alone; name the "
                          "architectures (e.g. 80;90) or give native by itself")
    elseif(arch MATCHES "^all(-major)?$")
      message(FATAL_ERROR "spectra: CMAKE_CUDA_ARCHITECTURES=${arch} is not supported (torch builds for an "
                          "explicit list); name the architectures (e.g. 80;90) or set TORCH_CUDA_ARCH_LIST "
                          "(e.g. \"8.0;9.0+PTX\")")
    else()
      message(FATAL_ERROR "spectra: CMAKE_CUDA_ARCHITECTURES entry '${arch}' is not an architecture; allowed are "
                          "numbers with an optional a/f suffix and -real/-virtual (e.g. 80, 90-real, 90a) or native")
    endif()
  endforeach()
  set(${out} "${result}" PARENT_SCOPE)
endfunction()

# spectra_resolve_cuda_arch_list(<out_list> <out_source>
#                                [CMAKE_ARCHS <list>] [TORCH_LIST <list>] [DETECTED <list>])
# The TORCH_CUDA_ARCH_LIST to build with, by the rules at the top of this file, and a phrase saying
# where it came from. CMAKE_ARCHS is CMAKE_CUDA_ARCHITECTURES, TORCH_LIST the TORCH_CUDA_ARCH_LIST
# asked for (either may be empty) and DETECTED the compute capabilities of the build machine's GPUs
# (e.g. "9.0", empty without one). Entries may be separated by ';' or spaces.
set(SPECTRA_DEFAULT_CUDA_ARCH_LIST "8.0;9.0+PTX")
function(spectra_resolve_cuda_arch_list out_list out_source)
  cmake_parse_arguments(PARSE_ARGV 2 arg "" "" "CMAKE_ARCHS;TORCH_LIST;DETECTED")
  foreach(name CMAKE_ARCHS TORCH_LIST DETECTED)
    string(REGEX REPLACE "[ \t\n]+" ";" value "${arg_${name}}")
    list(REMOVE_ITEM value "")
    set(${name} "${value}")
  endforeach()
  if(TORCH_LIST)
    set(list "${TORCH_LIST}")
    set(source "TORCH_CUDA_ARCH_LIST")
    if(CMAKE_ARCHS)
      # The same request in both notations (a script setting both) is no conflict: compare real code.
      set(same FALSE)
      if(NOT CMAKE_ARCHS STREQUAL "native")
        spectra_torch_arch_list_from_cmake(mapped "${CMAKE_ARCHS}")
        list(TRANSFORM mapped REPLACE "\\+PTX$" "")
        set(real "${TORCH_LIST}")
        list(TRANSFORM real REPLACE "\\+PTX$" "")
        if(mapped STREQUAL real)
          set(same TRUE)
        endif()
      endif()
      if(NOT same)
        message(WARNING "spectra: TORCH_CUDA_ARCH_LIST=${arg_TORCH_LIST} overrides "
                        "CMAKE_CUDA_ARCHITECTURES=${arg_CMAKE_ARCHS}; the kernels are compiled for ${list}")
      endif()
    endif()
  elseif(CMAKE_ARCHS STREQUAL "native")
    if(DETECTED)
      list(REMOVE_DUPLICATES DETECTED)
      set(list "${DETECTED}")
      set(source "CMAKE_CUDA_ARCHITECTURES=native (the GPUs of this machine)")
    else()
      message(WARNING "spectra: CMAKE_CUDA_ARCHITECTURES=native but torch sees no GPU on this machine; "
                      "compiling for ${SPECTRA_DEFAULT_CUDA_ARCH_LIST}")
      set(list "${SPECTRA_DEFAULT_CUDA_ARCH_LIST}")
      set(source "the default (CMAKE_CUDA_ARCHITECTURES=native, but no GPU on this machine)")
    endif()
  elseif(CMAKE_ARCHS)
    spectra_torch_arch_list_from_cmake(list "${CMAKE_ARCHS}")
    set(source "CMAKE_CUDA_ARCHITECTURES=${arg_CMAKE_ARCHS}")
  elseif(DETECTED)
    list(REMOVE_DUPLICATES DETECTED)
    set(list "${DETECTED}")
    set(source "the GPUs of this machine")
  else()
    set(list "${SPECTRA_DEFAULT_CUDA_ARCH_LIST}")
    set(source "the default (no GPU on this machine and no architectures requested)")
  endif()
  set(${out_list} "${list}" PARENT_SCOPE)
  set(${out_source} "${source}" PARENT_SCOPE)
endfunction()

# spectra_cuda_gencode_targets(<flags> <out_real> <out_ptx>)
# The real architectures (sm_NN) and PTX (compute_NN) that nvcc flags embed, from their -gencode
# arch=compute_X,code=sm_Y / code=compute_Y (or CMake's code=[...]) entries, in order. A fatal error
# when the flags would let an sm_80+ GPU run device code compiled for compute_7x or older: PTX below
# compute_80 (a GPU without a cubin of its own loads the newest PTX it can, possibly that one), or sm_80+
# code compiled from such PTX (TORCH_CUDA_ARCH_LIST's 8.0(7.5) notation).
function(spectra_cuda_gencode_targets flags out_real out_ptx)
  string(REGEX MATCHALL "arch=compute_[0-9]+[af]?,code=(\\[[a-z0-9_,]+\\]|[a-z0-9_]+)" entries "${flags}")
  set(real "")
  set(ptx "")
  foreach(entry IN LISTS entries)
    string(REGEX MATCH "^arch=compute_([0-9]+)[af]?,code=\\[?([a-z0-9_,]+)" _ "${entry}")
    set(from "${CMAKE_MATCH_1}")
    string(REPLACE "," ";" codes "${CMAKE_MATCH_2}")
    foreach(code IN LISTS codes)
      if(NOT code MATCHES "^(sm|compute)_([0-9]+)[af]?$")
        message(FATAL_ERROR "spectra: cannot read the CUDA code target '${code}' in '${entry}'")
      endif()
      if(CMAKE_MATCH_1 STREQUAL "sm")
        if(CMAKE_MATCH_2 GREATER_EQUAL 80 AND from LESS 80)
          message(FATAL_ERROR "spectra: '${entry}' compiles ${code} code from compute_${from} PTX, without the "
                              "kernels' sm_80 paths; list the architecture as itself (e.g. 8.0, not 8.0(7.5))")
        endif()
        list(APPEND real "${code}")
      else()
        if(CMAKE_MATCH_2 LESS 80)
          message(FATAL_ERROR "spectra: '${entry}' embeds ${code} PTX: an sm_80+ GPU without code of its own "
                              "would compile that and run the kernels without their sm_80 paths. Drop +PTX "
                              "from architectures below 8.0 (e.g. TORCH_CUDA_ARCH_LIST=\"7.5;8.0;9.0+PTX\")")
        endif()
        list(APPEND ptx "${code}")
      endif()
    endforeach()
  endforeach()
  if(real)
    list(REMOVE_DUPLICATES real)
  endif()
  if(ptx)
    list(REMOVE_DUPLICATES ptx)
  endif()
  set(${out_real} "${real}" PARENT_SCOPE)
  set(${out_ptx} "${ptx}" PARENT_SCOPE)
endfunction()
