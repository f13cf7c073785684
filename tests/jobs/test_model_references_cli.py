"""Hub ids and local folders on the command line: ``spectra profile --model org/name`` from a Hugging Face
cache on disk (offline), ``spectra run`` with a hub id, and meta.json's ``model_source`` (repo id, commit,
absolute path) through which ``spectra report`` finds the model from any folder."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from spectra.cli import main
from spectra.models import zoo
from spectra.report.html import build_report_data
from spectra.report.results import model_reference, read_result

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SMALL = ["--context-length", "16", "--n-samples", "2", "--batch-size", "2", "--layers", "0", "--quiet"]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache in tmp_path holding acme/tiny-llama at COMMIT (main), offline."""
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-llama"
    shutil.copytree(zoo.model_path("tiny-llama"), repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_profile_of_a_hub_id_records_repo_commit_and_absolute_path(hub_cache, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["profile", "--model", "acme/tiny-llama", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["name"] == "acme/tiny-llama"
    snapshot = hub_cache / "models--acme--tiny-llama" / "snapshots" / COMMIT
    assert meta["model_source"] == {
        "kind": "hub",
        "path": str(snapshot),
        "repo_id": "acme/tiny-llama",
        "revision": "main",
        "commit_hash": COMMIT,
    }
    assert model_reference(read_result(out)) == f"acme/tiny-llama@{COMMIT}"


def test_unknown_hub_id_is_a_clear_cli_error(hub_cache, tmp_path):
    result = CliRunner().invoke(main, ["profile", "--model", "acme/missing", "--out", str(tmp_path / "o"), *SMALL])
    assert result.exit_code == 1
    assert "acme/missing" in result.output and "hf download acme/missing" in result.output
    assert "--allow-download" in result.output
    assert not (tmp_path / "o").exists()


def test_relative_folder_is_recorded_absolute_and_the_report_finds_it_from_elsewhere(tmp_path, monkeypatch):
    shutil.copytree(zoo.model_path("tiny-llama"), tmp_path / "work" / "mine")
    monkeypatch.chdir(tmp_path / "work")
    result = CliRunner().invoke(main, ["profile", "--model", "mine", "--out", "out", *SMALL])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "work" / "out" / "meta.json").read_text())
    assert meta["model"]["name"] == "mine"
    assert meta["model_source"]["kind"] == "folder"
    assert meta["model_source"]["path"] == str(tmp_path / "work" / "mine")
    monkeypatch.chdir(tmp_path)  # "mine" is no folder here
    data = build_report_data(tmp_path / "work" / "out", n_samples=1, max_tokens=8)
    assert data["viewer"]["available"], data["viewer"]


def test_zoo_runs_record_no_model_source(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["profile", "--model", "tiny-llama", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    assert "model_source" not in json.loads((out / "meta.json").read_text())


def test_spectra_run_pins_a_hub_id_to_its_commit(hub_cache, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "kind: profile\nmodels: [acme/tiny-llama]\ncontext_length: 16\nn_samples: 2\nsamples_per_shard: 2\n"
        f"layers: [0]\nout: {tmp_path / 'out'}\n"
    )
    result = CliRunner().invoke(main, ["run", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "tiny-llama" / "meta.json").read_text())
    assert meta["model"]["name"] == f"acme/tiny-llama@{COMMIT}"
    assert meta["model_source"]["repo_id"] == "acme/tiny-llama"
    assert meta["model_source"]["commit_hash"] == COMMIT


def test_sweep_of_a_hub_id_records_its_source(hub_cache, tmp_path):
    from spectra.jobs.sweep.run import SweepConfig, run_sweep

    config = SweepConfig(
        model="acme/tiny-llama",
        experiment="qk_asymmetry",
        heads=[[1, 0]],
        alphas=[0.5, 1.0],
        context_length=16,
        n_samples=2,
        batch_size=2,
        n_bootstrap=20,
    )
    run_sweep(config, out=tmp_path / "sweep", progress=False)
    meta = json.loads((tmp_path / "sweep" / "meta.json").read_text())
    assert meta["model"]["name"] == "acme/tiny-llama"
    assert (meta["model_source"]["repo_id"], meta["model_source"]["commit_hash"]) == ("acme/tiny-llama", COMMIT)
