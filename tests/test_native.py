"""The native module's packaging: import errors, spectra.info, registered ops."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

import spectra
from spectra import info


def test_info_reports_build_and_ops():
    report = info.collect()
    assert report["native_loaded"]
    assert report["build"]["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    assert report["build"]["cxx_standard"] >= 202002
    assert "cpu" in report["build"]["backends"]
    assert report["ops"]["vec_stats"][0] == "CPU"
    text = info.format_report(report)
    assert "native module: loaded" in text and "torch.ops.spectra.vec_stats" in text


def test_info_reports_linked_cuda_kernels_and_architectures():
    build = info.collect()["build"]
    assert set(build["cuda_kernels"]) <= {"attn_row_stats", "vec_stats", "plasticity_pairwise"}
    if not build["cuda"]:
        assert build["cuda_kernels"] == [] and build["cuda_architectures"] == [] and build["cuda_ptx"] == []
    else:  # real code for each architecture, never compute_7x PTX (see cmake/SpectraCudaArchitectures.cmake)
        assert build["cuda_architectures"] and all(a.startswith("sm_") for a in build["cuda_architectures"])
        assert all(int(p.removeprefix("compute_").rstrip("af")) >= 80 for p in build["cuda_ptx"])
    text = info.format_report(info.collect())
    assert f"cuda kernels  {', '.join(build['cuda_kernels']) or 'none'}" in text


def test_python_m_spectra_info_runs():
    out = subprocess.run([sys.executable, "-m", "spectra.info"], capture_output=True, text=True, check=True)
    assert "native module: loaded" in out.stdout


def _shadow_package_without_core(tmp_path: Path) -> dict:
    """A copy of the Python sources with no compiled module: what a user gets before building."""
    package = Path(spectra.__file__).parent
    shutil.copytree(package, tmp_path / "spectra", ignore=shutil.ignore_patterns("*.so", "__pycache__", "assets"))
    return {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"}


# An editable install puts a finder on sys.meta_path that wins over PYTHONPATH; drop it so the
# shadow copy (which has no _core) is what gets imported.
_WITHOUT_EDITABLE_FINDER = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]; "
)


def test_import_without_native_module_says_how_to_build(tmp_path):
    """``import spectra`` is light and succeeds; the first name that needs the core says how to build it."""
    env = _shadow_package_without_core(tmp_path)
    code = _WITHOUT_EDITABLE_FINDER + "import spectra; print('imported', flush=True); spectra.vec_stats"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode != 0
    assert out.stdout == "imported\n"
    assert "NativeModuleError" in out.stderr
    assert "pip install --no-build-isolation -e ." in out.stderr and "make setup" in out.stderr


def test_info_without_native_module_explains_and_fails(tmp_path):
    env = _shadow_package_without_core(tmp_path)
    code = _WITHOUT_EDITABLE_FINDER + (
        "import runpy; sys.orig_argv = [sys.executable, '-m', 'spectra.info']; "
        "runpy.run_module('spectra.info', run_name='__main__', alter_sys=True)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "native module: NOT LOADED" in out.stdout
    assert "make setup" in out.stdout
