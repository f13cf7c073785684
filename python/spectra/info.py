"""``python -m spectra.info``: versions, build flags, compiled backends, native module status.

Works even when the native module is missing or broken (that is when it is needed most), and then
exits with status 1 after saying how to build it.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any

import torch

import spectra
from spectra import _native

_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _op_backends(op: str) -> list[str]:
    return [key for key in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(f"spectra::{op}", key)]


def _listed(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def collect() -> dict[str, Any]:
    """Everything ``spectra.info`` reports, as a dict (also used by result folders' meta.json).

    Example:
        >>> from spectra import info
        >>> info.collect()["native_loaded"]
        True
    """
    core = _native.load_core()  # None only under `python -m spectra.info`, which explains why
    report: dict[str, Any] = {
        "spectra": spectra.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "torch_cuda": torch.version.cuda,
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "native_loaded": core is not None,
    }
    if core is None:
        report["native_error"] = str(_native.load_error)
        return report
    report["build"] = core.build_info()
    ops = sorted(
        {name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("spectra::")}
    )
    report["ops"] = {op: _op_backends(op) for op in ops}
    return report


def format_report(report: dict[str, Any]) -> str:
    """Renders :func:`collect`'s dict as the text ``python -m spectra.info`` prints."""
    lines = [f"spectra {report['spectra']}  (python {report['python']}, {report['platform']})", "", "packages:"]
    lines += [f"  {name:<13} {version}" for name, version in report["packages"].items()]
    lines.append(
        f"  torch CUDA    {report['torch_cuda'] or 'none (CPU build)'}; visible GPUs: {report['cuda_devices']}"
    )
    lines.append("")
    if not report["native_loaded"]:
        lines += ["native module: NOT LOADED", f"  error: {report['native_error']}", "", _native.BUILD_HINT]
        return "\n".join(lines)
    build = report["build"]
    lines += [
        "native module: loaded (spectra._core)",
        f"  built against torch {build['torch_version']} ({build['build_type']}, C++ {build['cxx_standard']})",
        f"  compiler      {build['cxx_compiler']}",
        f"  flags         {build['cxx_flags'].strip() or '(none)'}",
        f"  cxx11 abi     {build['glibcxx_use_cxx11_abi']}",
        f"  backends      {', '.join(build['backends'])}",
    ]
    if build["cuda"]:
        lines.append(f"  nvcc          {build['cuda_compiler']} (TORCH_CUDA_ARCH_LIST {build['cuda_arch_list']})")
        lines.append(f"  cuda archs    {_listed(build['cuda_architectures'])}; PTX {_listed(build['cuda_ptx'])}")
    lines.append(f"  cuda kernels  {_listed(build['cuda_kernels'])}")
    lines.append("  ops:")
    lines += [f"    torch.ops.spectra.{op:<20} {', '.join(keys)}" for op, keys in report["ops"].items()]
    threads = next((line.strip() for line in build["parallel_backend"].splitlines() if "backend" in line), "")
    if threads:
        lines.append(f"  {threads}")
    return "\n".join(lines)


def main() -> int:
    report = collect()
    print(format_report(report))
    return 0 if report["native_loaded"] else 1


if __name__ == "__main__":
    sys.exit(main())
