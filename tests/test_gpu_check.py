"""tools/gpu (make gpu-check) on a CPU machine: the script parses, and each Python part runs in its
CPU mode on tiny inputs. The GPU run itself is `make gpu-check` on a GPU machine (tools/gpu/README.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "tools" / "gpu"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def run(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_script_parses_and_make_target_exists():
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    subprocess.run(["bash", "-n", str(GPU / "gpu_check.sh")], check=True)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^gpu-check:", makefile, re.M)
    assert "gpu-check" in re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1)
    assert "gpu-check" not in re.search(r"^test:(.*)$", makefile, re.M).group(1)
    assert re.search(r"^gpu-check:\s*$", makefile, re.M), "gpu-check must not depend on setup"


def test_carry_is_small_and_holds_what_the_readme_says():
    carry = GPU / "deps.tar.gz"
    assert carry.stat().st_size < 2 << 20
    with tarfile.open(carry) as tar:
        names = set(tar.getnames())
    for path in (
        "eigen/share/eigen3/cmake/Eigen3Config.cmake",
        "eigen/include/eigen3/Eigen/Core",
        "eigen/include/eigen3/Eigen/Eigenvalues",
        "eigen/include/eigen3/unsupported/Eigen/FFT",
        "python3.12/Python.h",
    ):
        assert path in names, path


def test_compare_ops_cpu_mode(tmp_path):
    out = tmp_path / "compare.json"
    result = run(str(GPU / "compare_ops.py"), "--device", "cpu", "--quick", "--dtypes", "fp32", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    for op in ("attn_row_stats", "vec_stats", "plasticity_pairwise"):
        assert data["ops"][op]["cuda_kernel"]["verdict"].startswith("skipped:"), op
        torch_cpu = data["ops"][op]["torch_cpu"]["verdict"]
        assert torch_cpu.startswith(("pass", "skipped: no torch path")), (op, torch_cpu)
    assert "COMPARE attn_row_stats" in result.stdout


def test_compare_ops_catches_a_wrong_path(tmp_path):
    """A torch path that is off by a little in one statistic fails, naming the statistic."""
    (tmp_path / "bad_path.py").write_text(
        "import spectra\n"
        "from spectra import plasticity\n"
        "def attn_row_stats(q, k, scaling=None, **kw):\n"
        "    s = spectra.attn_row_stats(q, k, scaling, **kw)\n"
        "    return s._replace(entropy=s.entropy * 1.001)\n"
        "def vec_stats(x):\n"
        "    return spectra.vec_stats(x)\n"
        "def plasticity_pairwise(w, mean, var):\n"
        "    return plasticity.pairwise(w, mean, var)\n"
    )
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ENV.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, str(GPU / "compare_ops.py"), "--device", "cpu", "--quick", "--dtypes", "fp32"]
        + ["--torch-path-module", "bad_path"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "torch_cpu=FAIL" in result.stdout and "entropy:" in result.stdout
    assert re.search(r"COMPARE vec_stats .*torch_cpu=pass", result.stdout)


def test_sanitize_inputs_and_env_report_cpu_mode():
    procs = [
        subprocess.Popen(
            [sys.executable, str(GPU / script), *args],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for script, args in (("sanitize_inputs.py", ("--device", "cpu")), ("env_report.py", ()))
    ]
    (sanitize, _), (report, _) = (p.communicate(timeout=60) for p in procs)
    assert procs[0].returncode == 0 and "SANITIZE-RUN-DONE cpu" in sanitize, sanitize
    assert procs[1].returncode == 0 and "torch " in report, report


def test_profile_check_tiny_cpu(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "profile.json"
    result = run(
        str(GPU / "profile_check.py"),
        "--device",
        "cpu",
        "--tiny",
        "--lengths",
        "32",
        "--repeats",
        "1",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(out.read_text())["runs"]
    assert row["entropy_finite"] and row["k_eff_in_range"] and row["max_attn_in_range"]
    assert row["device_vs_cpu_layer0"]["h0_k_eff_equal_frac"] == 1.0


def test_summarize_names_the_validated_ops_and_the_cmake_line(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (work / "build.txt").write_text("direct\n")
    verdict = {
        "cuda_kernel": {"verdict": "pass 4/4"},
        "torch_cuda": {"verdict": "pass 4/4"},
        "torch_cpu": {"verdict": "pass 4/4"},
    }
    ops = {op: verdict for op in ("attn_row_stats", "vec_stats", "plasticity_pairwise")}
    ops["vec_stats"] = dict(verdict, cuda_kernel={"verdict": "FAIL 1/4"})
    (work / "compare.json").write_text(json.dumps({"device": "cuda", "ops": ops}))
    cases = "".join(
        f'<testcase name="{name}"/>'
        for name in (
            "test_attn_row_stats_ties",
            "test_vec_stats_empty",
            "test_plasticity_pairwise_x",
            "test_opcheck_on_cuda",
        )
    )
    (work / "pytest-all.xml").write_text(f"<testsuites><testsuite>{cases}</testsuite></testsuites>")
    race = "========= Error: Race reported between Write access at 0x10 in void plasticity_pairwise_kernel<double>(x)\n"
    (work / "sanitizer-memcheck.log").write_text("SANITIZE-RUN-DONE cuda\n========= ERROR SUMMARY: 0 errors\n")
    (work / "sanitizer-racecheck.log").write_text(
        f"SANITIZE-RUN-DONE cuda\n{race}========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)\n"
    )
    (out / "summary.txt").write_text("head\n")
    result = run(str(GPU / "summarize.py"), str(work), str(out))
    assert result.returncode == 0, result.stderr
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("head\n")
    assert re.search(r"^attn_row_stats +VALIDATED", summary, re.M)
    assert re.search(r"^vec_stats +not validated: compare_ops: FAIL", summary, re.M)
    assert re.search(r"^plasticity_pairwise +not validated: racecheck: 1 reports", summary, re.M)
    assert "set(SPECTRA_CUDA_VALIDATED cpp/kernels/attn_row_stats.cu cpp/ops/attn_row_stats_cuda.cu)" in summary
    assert json.loads((out / "results.json").read_text())["validated"] == ["attn_row_stats"]
