"""``spectra dynamics`` and ``spectra taxonomy`` from the command line on the embedded checkpoints."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from spectra.cli import main
from spectra.models import zoo

SMALL = ["--context-length", "48", "--n-samples", "2", "--n-random", "2", "--random-block", "8", "--quiet"]


def test_dynamics_cli_on_the_embedded_checkpoints(tmp_path):
    out = tmp_path / "dyn"
    result = CliRunner().invoke(main, ["dynamics", "--model", "tiny-qwen3", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == [0, 100, 200, 400, 800, 1600] and summary["has_gamma"]
    for name in summary["files"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    head = pd.read_parquet(out / "head_series.parquet")
    assert head["step"].is_monotonic_increasing
    assert set(pd.read_csv(out / "taxonomy.csv")["class"]) <= {
        "static_sink",
        "induction",
        "previous_token",
        "positional",
        "gatherer",
        "semantic_retriever",
        "unclassified",
    }
    assert summary["classes_per_step"]["0"] == {"gatherer": 32}  # random init: every head near uniform
    assert not list(out.glob(".*.tmp"))


def test_dynamics_cli_with_folders_and_errors(tmp_path):
    folders = [str(p) for p in zoo.checkpoint_paths("tiny-qwen3")[:2]]
    args = [
        "dynamics",
        "--checkpoints",
        folders[0],
        "--checkpoints",
        folders[1],
        "--out",
        str(tmp_path / "two"),
        *SMALL,
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "steps [0, 100]" in result.output
    both = CliRunner().invoke(
        main, ["dynamics", "--model", "tiny-qwen3", "--checkpoints", folders[0], "--out", str(tmp_path / "x")]
    )
    assert both.exit_code != 0 and "either --checkpoints" in both.output
    llama = CliRunner().invoke(main, ["dynamics", "--model", "tiny-llama", "--out", str(tmp_path / "y"), *SMALL])
    assert llama.exit_code != 0 and "no training checkpoints" in llama.output


def test_taxonomy_cli(tmp_path):
    csv = tmp_path / "t.csv"
    result = CliRunner().invoke(
        main, ["taxonomy", "--model", "tiny-llama", "--context-length", "48", "--n-samples", "2", "--out", str(csv)]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(csv)
    assert len(table) == 32 and "runner_up" in table and "class" in result.output


def test_gamma_heatmap_of_a_family_without_qk_norm_is_a_clear_error(tmp_path):
    import shutil

    steps = [shutil.copytree(zoo.model_path("tiny-llama"), tmp_path / f"step-{s:06d}") for s in (0, 10)]
    args = [
        "dynamics",
        "--checkpoints",
        str(steps[0]),
        "--checkpoints",
        str(steps[1]),
        "--out",
        str(tmp_path / "o"),
        *SMALL,
    ]
    refused = CliRunner().invoke(main, [*args, "--gamma-heatmap"])
    assert refused.exit_code != 0 and "has no QK-norm" in refused.output and "Traceback" not in refused.output
    drawn = CliRunner().invoke(main, args)  # by default the heatmap is simply left out for such a family
    assert drawn.exit_code == 0, drawn.output
    assert not (tmp_path / "o" / "gamma_heatmap.png").exists() and (tmp_path / "o" / "norm_divergence.png").is_file()
