"""The Python side of the GPU check's environment report: interpreter, headers, torch, the GPU and
the packages the build and the checks use. Never fails: a missing package is printed as MISSING.

    python tools/gpu/env_report.py
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig

PACKAGES = (
    "torch",
    "transformers",
    "scikit_build_core",
    "pybind11",
    "cmake",
    "ninja",
    "pytest",
    "pytest_timeout",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "matplotlib",
    "safetensors",
    "tokenizers",
    "psutil",
)


def main() -> None:
    include = sysconfig.get_paths()["include"]
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    print(
        f"python include {include} (Python.h {'present' if os.path.exists(os.path.join(include, 'Python.h')) else 'MISSING'})"
    )
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
            print(f"  {name} {getattr(module, '__version__', '?')}")
        except Exception as exc:  # noqa: BLE001
            print(f"  {name} MISSING ({type(exc).__name__})")
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        print(f"torch: import failed: {exc}")
        return
    print(
        f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} "
        f"available {torch.cuda.is_available()} cxx11abi {torch._C._GLIBCXX_USE_CXX11_ABI}"
    )
    print(f"torch cmake prefix {torch.utils.cmake_prefix_path}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(
                f"gpu {i}: {p.name} sm_{p.major}{p.minor} ({p.major}.{p.minor}), {p.multi_processor_count} SMs, "
                f"{p.total_memory / 2**30:.0f} GiB"
            )
        print(f"torch arch list (compiled) {torch.cuda.get_arch_list()}")


if __name__ == "__main__":
    main()
