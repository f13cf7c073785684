"""``spectra sweep --config``: every config in configs/ runs on the embedded model (shrunk for CI),
writes its tables, summary and figures, resumes, and rejects bad configs clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from spectra.cli import main
from spectra.jobs.sweep.run import SweepConfig, load_config, run_sweep

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
SMALL = {"context_length": 32, "n_samples": 2, "batch_size": 2, "n_bootstrap": 50}


def shrunk(path: Path, tmp_path: Path) -> Path:
    raw = yaml.safe_load(path.read_text()) | SMALL
    raw.pop("out", None)
    small = tmp_path / path.name
    small.write_text(yaml.safe_dump(raw))
    return small


def test_the_seed_experiments_have_configs():
    assert {p.stem for p in CONFIGS} == {
        "exp1_scale_sweep",
        "exp2_gain",
        "exp2b_gain_map",
        "exp3_qk_scaling",
        "exp3b_gain_conditioned",
    }
    for path in CONFIGS:
        load_config(path)  # every shipped config is valid


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_runs_from_the_cli(path, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sweep", "--config", str(shrunk(path, tmp_path)), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert meta["run"]["experiment"] == summary["experiment"]
    for name in summary["files"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    sweep = pd.read_parquet(out / "sweep.parquet")
    assert sweep[["entropy", "max_attn", "k_eff"]].notna().all().all()
    if summary["experiment"] == "gain_map":
        assert sum(summary["categories"].values()) == 32
        assert "selected_heads" in summary and "high" in result.output
    if summary["experiment"] == "qk_asymmetry":
        table = pd.read_csv(out / "asymmetry.csv")
        # Correct GQA mapping: the target head's own Q and K curves coincide in a real forward.
        assert table["asymmetry"].between(0.99, 1.01).all()
        assert (table["k_group_entropy_shift"] > 0).all()
    if path.stem == "exp2_gain":
        assert summary["gain_ratio_verdict"] in ("no distinction", "minor", "higher sensitivity", "strong evidence")
    assert not list(out.rglob(".*.tmp"))


def test_resume_keeps_finished_shards(tmp_path):
    config = SweepConfig(experiment="qk_asymmetry", heads=[[1, 0], [2, 3]], alphas=[0.5, 1.0], **SMALL)
    first = run_sweep(config, out=tmp_path / "r", progress=False)
    assert len(first.computed_shards) == 2
    shards = sorted((tmp_path / "r" / "shards").glob("*.parquet"))
    shards[0].unlink()  # as if interrupted before the first head's shard was written
    with pytest.raises(ValueError, match="--resume"):
        run_sweep(config, out=tmp_path / "r", progress=False)
    again = run_sweep(config, out=tmp_path / "r", resume=True, progress=False)
    assert again.computed_shards == [shards[0].name]
    pd.testing.assert_frame_equal(first.tables["asymmetry"], again.tables["asymmetry"])
    other = SweepConfig(experiment="qk_asymmetry", heads=[[1, 0]], alphas=[0.5, 2.0], **SMALL)
    with pytest.raises(ValueError, match="another run"):
        run_sweep(other, out=tmp_path / "r", resume=True, progress=False)


def test_bad_configs_name_the_setting(tmp_path):
    def write(obj) -> Path:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(obj))
        return path

    with pytest.raises(ValueError, match="unknown setting.*alpha_grid"):
        load_config(write({"experiment": "gain_map", "alpha_grid": [1.0]}))
    with pytest.raises(ValueError, match="experiment"):
        load_config(write({"experiment": "exp9"}))
    with pytest.raises(ValueError, match="names no experiment"):
        load_config(write({"model": "tiny-llama"}))
    with pytest.raises(ValueError, match="alphas"):
        SweepConfig(experiment="scale_sweep", alphas=[0.5, -1.0])
    with pytest.raises(ValueError, match="kinds"):
        SweepConfig(experiment="qk_asymmetry", kinds=["q"])
    with pytest.raises(ValueError, match="heads"):
        SweepConfig(experiment="gain_map", heads=[[0, 0]])
    with pytest.raises(ValueError, match="control"):
        SweepConfig(experiment="gain_map", control=[0, 0])
    with pytest.raises(ValueError, match="n_samples"):
        SweepConfig(experiment="gain_map", n_samples=0)
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            "--config",
            str(write({"experiment": "scale_sweep", "heads": [[9, 0]], **SMALL})),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0 and "layer 9" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("not a result folder")
    with pytest.raises(ValueError, match="not empty"):
        run_sweep(SweepConfig(experiment="gain_map", **SMALL), out=tmp_path / "full", progress=False)
