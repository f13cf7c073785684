"""Attention backends and model folders: an architecture that refuses sdpa (Gemma2) loads with eager and
a one-line notice, from every entry point (load_model, the CLI, the report's viewer); meta.json records
the backend used; a folder without tokenizer files is an error naming the folder and the files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from spectra.cli import main
from spectra.models.loading import AttentionFallbackWarning, load_model
from spectra.models.random_init import tiny_model
from spectra.models.zoo import model_path
from spectra.models.zoo.paths import TOKENIZER_FILES
from spectra.report.html import build_report_data
from spectra.report.viewer import load_run_model


def _folder(tmp_path: Path, family: str = "gemma2", *, tokenizer: bool = True) -> Path:
    """A random-init tiny model of ``family`` saved with tiny-llama's tokenizer (vocab 4096)."""
    folder = tmp_path / family
    tiny_model(family, "eager", vocab_size=4096).save_pretrained(folder)
    if tokenizer:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(Path(model_path("tiny-llama")) / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("models"))


def test_gemma2_with_the_default_backend_loads_eager_with_a_notice(gemma2):
    with pytest.warns(
        AttentionFallbackWarning, match=r"does not support attn_implementation='sdpa'; loaded with 'eager'"
    ):
        model, tokenizer = load_model(str(gemma2))
    assert model.config._attn_implementation == "eager"
    assert len(tokenizer("In the beginning")["input_ids"]) > 1


def test_gemma2_asked_for_eager_loads_without_a_notice(gemma2):
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttentionFallbackWarning)
        model, _ = load_model(str(gemma2), attn_implementation="eager")
    assert model.config._attn_implementation == "eager"


def test_a_model_that_supports_sdpa_keeps_it():
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttentionFallbackWarning)
        model, _ = load_model("tiny-llama")
    assert model.config._attn_implementation == "sdpa"


def test_a_bad_backend_is_a_value_error_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"attn_implementation='flash': allowed: sdpa, eager"):
        load_model("tiny-llama", attn_implementation="flash")


def test_the_report_viewer_works_for_a_model_that_refuses_sdpa(gemma2, tmp_path):
    with pytest.warns(AttentionFallbackWarning):
        loaded = load_run_model(str(gemma2))
    assert loaded.reason == "" and loaded.model.config._attn_implementation == "eager"
    out = tmp_path / "profiled"
    with pytest.warns(AttentionFallbackWarning):
        result = CliRunner().invoke(
            main,
            ["profile", "--model", str(gemma2), "--context-length", "16", "--n-samples", "2", "--out", str(out)]
            + ["--quiet"],
        )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["attn_implementation"] == "eager"  # the backend used, not the one asked for
    with pytest.warns(AttentionFallbackWarning):
        data = build_report_data(out, n_samples=1, max_tokens=8)
    assert data["viewer"]["available"], data["viewer"].get("reason")


def test_the_cli_notice_is_one_line_without_a_traceback(gemma2):
    command = [sys.executable, "-m", "spectra", "taxonomy", "--model", str(gemma2)]
    done = subprocess.run(
        [*command, "--context-length", "16", "--n-samples", "1"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    notices = [line for line in done.stderr.splitlines() if "eager" in line]
    assert notices == [
        f"spectra: {gemma2}: its architecture does not support attn_implementation='sdpa'; loaded with 'eager' instead"
    ], done.stderr
    assert "Traceback" not in done.stderr and "warnings.warn" not in done.stderr


def test_a_folder_without_tokenizer_files_is_an_error_naming_them(tmp_path):
    folder = _folder(tmp_path, "llama", tokenizer=False)
    with pytest.raises(ValueError) as error:
        load_model(str(folder))
    message = str(error.value)
    assert str(folder) in message and "no tokenizer files" in message
    assert all(name in message for name in TOKENIZER_FILES)
    result = CliRunner().invoke(main, ["taxonomy", "--model", str(folder), "--context-length", "16"])
    assert result.exit_code == 1 and "no tokenizer files" in result.output and "0 tokens" not in result.output
