// The Python module spectra._core: importing it registers the torch.ops.spectra ops (their
// TORCH_LIBRARY blocks live in the other translation units of this module) and exposes the
// stateful native objects through pybind11 (bound in the *_bindings.cpp files of this folder and
// cpp/registry/).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "spectra/build_info.hpp"

namespace py = pybind11;

namespace spectra::bindings {
void bind_running_moments(py::module_& m);
void bind_position_sampler(py::module_& m);
void bind_hook_registry(py::module_& m);
void bind_second_moments(py::module_& m);
void bind_qk_geometry(py::module_& m);
void bind_plasticity_head(py::module_& m);
namespace {

py::dict build_info() {
  py::dict info;
  info["version"] = build_info::version;
  info["build_type"] = build_info::build_type;
  info["cxx_compiler"] = build_info::cxx_compiler;
  info["cxx_flags"] = build_info::cxx_flags;
  info["cxx_standard"] = __cplusplus;
  info["torch_version"] = build_info::torch_version;
  info["glibcxx_use_cxx11_abi"] = static_cast<int>(_GLIBCXX_USE_CXX11_ABI);
  info["parallel_backend"] = at::get_parallel_info();
#ifdef SPECTRA_WITH_CUDA
  info["cuda"] = true;
  info["cuda_compiler"] = build_info::cuda_compiler;
  info["cuda_arch_list"] = build_info::cuda_arch_list;
#else
  info["cuda"] = false;
#endif
  // Lists, empty without CUDA: the architectures compiled (sm_NN), the PTX embedded (compute_NN) and
  // the ops whose CUDA kernel is linked.
  auto strings = [](const auto& values) {
    py::list out;
    for (std::string_view v : values) out.append(py::str(v.data(), v.size()));
    return out;
  };
  info["cuda_architectures"] = strings(build_info::cuda_architectures);
  info["cuda_ptx"] = strings(build_info::cuda_ptx);
  info["cuda_kernels"] = strings(build_info::cuda_kernels);
  py::list backends;
  backends.append("cpu");
#ifdef SPECTRA_WITH_CUDA
  backends.append("cuda");
#endif
  info["backends"] = backends;
  return info;
}

}  // namespace
}  // namespace spectra::bindings

PYBIND11_MODULE(_core, m) {
  using namespace spectra::bindings;
  m.doc() = "Spectra's native core: torch.ops.spectra.* tensor ops and stateful accumulators.";
  bind_position_sampler(m);  // before the registry, whose constructor takes one
  bind_hook_registry(m);
  bind_second_moments(m);
  bind_qk_geometry(m);
  bind_plasticity_head(m);
  m.def("build_info", &build_info, "Compiler, flags, torch version and backends this module was built with.");
  bind_running_moments(m);
}
