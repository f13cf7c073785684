"""``--device`` and ``--dtype`` on every command that loads a model: ``--device cpu --dtype bfloat16``
reaches ``load_model`` and the results record the dtype; a device this torch lacks, a nonsense device
and an unsupported dtype are usage errors (exit 2, no traceback) naming the option and the allowed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import spectra.models.loading as loading
from spectra.cli import main
from spectra.models import zoo


@pytest.fixture
def loads(monkeypatch):
    """The (dtype, device) of every load_model call."""
    calls: list[tuple[torch.dtype, object]] = []
    pending: list[torch.dtype] = []  # load_model checks the dtype, then the device
    check_dtype, check_device = loading.check_dtype, loading.check_device

    def dtype_spy(dtype, *args):
        pending[:] = [check_dtype(dtype, *args)]
        return pending[0]

    def device_spy(device, **kwargs):
        calls.append((pending[0], device))
        return check_device(device, **kwargs)

    monkeypatch.setattr(loading, "check_dtype", dtype_spy)
    monkeypatch.setattr(loading, "check_device", device_spy)
    return calls


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "examples.txt"
    path.write_text("In the beginning God created the heaven and the earth.\nAnd the earth was without form.\n")
    return path


def _sweep_config(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "sweep.yaml"
    settings = {"experiment": "scale_sweep", "heads": [[1, 0]], "alphas": [0.5, 1.0, 1.5], "modes": ["local"]}
    small = {"context_length": 16, "n_samples": 2, "batch_size": 2, "n_bootstrap": 10}
    path.write_text(yaml.safe_dump({**settings, **small, **extra}))
    return path


def _run_config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"kind": "profile", "models": ["tiny-llama"], "context_length": 16, "n_samples": 2}))
    return path


def _profile_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "profiled"
    args = ["profile", "--model", "tiny-llama", "--context-length", "16", "--n-samples", "2", "--out", str(folder)]
    assert CliRunner().invoke(main, [*args, "--quiet"]).exit_code == 0
    return folder


#: command -> (arguments but --device/--dtype, the folder whose results name the dtype or None)
def _commands(tmp_path: Path) -> dict[str, list[str]]:
    out = str(tmp_path / "out")
    checkpoint = str(zoo.checkpoint_paths("tiny-qwen3")[-1])
    return {
        "profile": ["--model", "tiny-llama", "--context-length", "16", "--n-samples", "2", "--out", out, "--quiet"],
        "capture": ["--model", "tiny-llama", "--data", str(_data(tmp_path)), "--out", out, "--layers", "0"],
        "dynamics": ["--checkpoints", checkpoint, "--out", out, "--context-length", "16", "--n-samples", "2"]
        + ["--n-random", "2", "--random-block", "4", "--quiet"],
        "geometry": ["--model", "tiny-llama", "--n-examples", "2", "--max-length", "16", "--out", out],
        "plasticity": ["--model", "tiny-llama", "--n-examples", "1", "--max-length", "32", "--out", out, "--quiet"]
        + ["--pairs-per-cell", "8", "--max-tokens-per-head", "200"],
        "sweep": ["--config", str(_sweep_config(tmp_path)), "--out", out, "--quiet"],
        "taxonomy": ["--model", "tiny-llama", "--context-length", "16", "--n-samples", "2"],
        "demo": ["--context-length", "16", "--n-samples", "2", "--batch-size", "2", "--out", out],
        "run": [str(_run_config(tmp_path)), "--out", out, "--quiet"],
        "report": [str(tmp_path / "profiled"), "--out", str(tmp_path / "report.html"), "--max-tokens", "8"],
    }


COMMANDS = ("profile", "capture", "dynamics", "geometry", "plasticity", "sweep", "taxonomy", "demo", "run", "report")


def _recorded_dtype(command: str, out: Path) -> str | None:
    """The model dtype a command's result folder records (None where it records none)."""
    if command in ("profile", "sweep", "demo"):
        return json.loads((out / "meta.json").read_text())["model"]["dtype"]
    if command == "run":
        return json.loads((out / "tiny-llama" / "meta.json").read_text())["model"]["dtype"]
    if command == "capture":
        return "torch." + json.loads((out / "spectra_capture.json").read_text())["model"]["torch_dtype"]
    if command in ("geometry", "plasticity"):
        (sidecar,) = (out / "qk").glob("*/spectra_capture.json")
        return "torch." + json.loads(sidecar.read_text())["model"]["torch_dtype"]
    if command == "dynamics":
        return "torch." + json.loads((out / "meta.json").read_text())["settings"]["dtype"]
    return None


@pytest.mark.parametrize("command", COMMANDS)
def test_device_cpu_and_dtype_bfloat16_reach_the_model(command, tmp_path, loads):
    if command == "report":
        _profile_folder(tmp_path)
        loads.clear()
    args = _commands(tmp_path)[command]
    result = CliRunner().invoke(main, [command, *args, "--device", "cpu", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert loads and all(call == (torch.bfloat16, "cpu") for call in loads[:1]), loads
    if command not in ("demo", "report"):  # these two also load the model for the report's viewer
        assert set(loads) == {(torch.bfloat16, "cpu")}, loads
    recorded = _recorded_dtype(command, tmp_path / "out")
    assert recorded in (None, "torch.bfloat16"), recorded


def test_without_the_options_models_load_as_before(tmp_path, loads):
    args = _commands(tmp_path)["profile"]
    assert CliRunner().invoke(main, ["profile", *args]).exit_code == 0
    assert loads == [(torch.float32, None)]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert "attn_implementation" not in meta["model"]  # the default, sdpa, is not named (as before)


def test_sweep_config_keys_and_the_options_that_override_them(tmp_path, loads):
    config = _sweep_config(tmp_path, dtype="fp16", device="cpu")
    out = tmp_path / "sweep"
    assert CliRunner().invoke(main, ["sweep", "--config", str(config), "--out", str(out), "--quiet"]).exit_code == 0
    assert loads == [(torch.float16, "cpu")]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["dtype"] == "torch.float16"
    assert "dtype" not in meta["run"] and "device" not in meta["run"]  # identity: the weights' fingerprint
    again = CliRunner().invoke(
        main, ["sweep", "--config", str(config), "--out", str(tmp_path / "s2"), "--dtype", "float32", "--quiet"]
    )
    assert again.exit_code == 0, again.output
    assert loads[-1] == (torch.float32, "cpu")
    other = json.loads((tmp_path / "s2" / "meta.json").read_text())
    assert other["run_hash"] != meta["run_hash"]  # the dtype changes a run's identity ...
    moved = _sweep_config(tmp_path, dtype="fp16")
    third = CliRunner().invoke(main, ["sweep", "--config", str(moved), "--out", str(tmp_path / "s3"), "--quiet"])
    assert third.exit_code == 0, third.output
    assert json.loads((tmp_path / "s3" / "meta.json").read_text())["run_hash"] == meta["run_hash"]  # ... the device not


BAD = {
    "no_cuda": (["--device", "cuda"], "--device", "device='cuda': this torch ("),
    "gpu_index": (["--device", "cuda:7"], "--device", "device='cuda:7': this machine has 2 CUDA GPU(s)"),
    "nonsense": (["--device", "tpu9"], "--device", "device='tpu9': not a device; allowed: cpu, cuda, cuda:N"),
    "int8": (["--dtype", "int8"], "--dtype", "'int8' is not one of 'float32', 'float16', 'bfloat16'"),
}


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_devices_and_dtypes_are_usage_errors_naming_the_allowed_values(command, case, tmp_path, monkeypatch, loads):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: case == "gpu_index")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if case == "gpu_index" else 0)
    extra, option, message = BAD[case]
    result = CliRunner().invoke(main, [command, *_commands(tmp_path)[command], *extra])
    assert result.exit_code == 2, result.output
    assert f"Error: Invalid value for '{option}': {message}" in " ".join(result.output.split())
    assert "allowed: cpu" in result.output if case == "no_cuda" else True
    assert "Traceback" not in result.output and not loads  # refused before any model loads


@pytest.fixture
def backends(monkeypatch):
    """The attention backend every load_model call was asked for."""
    calls: list[str] = []
    check = loading.check_attn_implementation

    def spy(value, *args):
        calls.append(check(value, *args))
        return calls[-1]

    monkeypatch.setattr(loading, "check_attn_implementation", spy)
    return calls


@pytest.mark.parametrize("command", COMMANDS)
def test_attn_implementation_eager_reaches_the_model(command, tmp_path, backends):
    if command == "report":
        _profile_folder(tmp_path)
        backends.clear()
    args = _commands(tmp_path)[command]
    result = CliRunner().invoke(main, [command, *args, "--attn-implementation", "eager"])
    assert result.exit_code == 0, result.output
    assert backends and set(backends) == {"eager"}, backends
    if command in ("profile", "sweep", "demo", "run"):  # meta.json records the backend the model ran with
        meta = tmp_path / "out" / ("tiny-llama" if command == "run" else "") / "meta.json"
        assert json.loads(meta.read_text())["model"]["attn_implementation"] == "eager"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_attn_implementation_is_a_usage_error(command, tmp_path, backends):
    result = CliRunner().invoke(main, [command, *_commands(tmp_path)[command], "--attn-implementation", "flash"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "Error: Invalid value for '--attn-implementation': 'flash' is not one of 'sdpa', 'eager'" in message
    assert "Traceback" not in result.output and not backends
