"""Attention plasticity from capture folders to the result folder: the summaries (deciles, quintiles,
length bins, model report, score correlations), the CLI on the embedded models and their
checkpoints at full context, qk-sniffer folders, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from spectra import plasticity
from spectra.cli import main
from spectra.plasticity import summary as plasticity_summary
from spectra.testing.tolerance import assert_png_written


def profile_frame(n_points: int, n_heads: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for head in range(n_heads):
        for i in range(n_points):
            rows.append(
                {
                    "layer": 0,
                    "head": head,
                    "kv_head": 0,
                    "q_cell": i,
                    "tau": (i + 0.5) * 10.0,
                    "context_fraction": (i + 0.5) / n_points,
                    "n_queries": 4,
                    "ap": rng.uniform(0.2, 0.9),
                }
            )
    return pd.DataFrame(rows)


def test_a_quintile_is_the_mean_of_its_two_deciles_when_they_hold_equal_points():
    fr = plasticity_summary.fractions(profile_frame(40))
    for _head, part in fr.groupby("head"):
        deciles = part[part["scheme"] == "decile"].set_index("bin")["ap"]
        quintiles = part[part["scheme"] == "quintile"].set_index("bin")["ap"]
        for b in range(5):
            assert quintiles[b] == pytest.approx((deciles[2 * b] + deciles[2 * b + 1]) / 2, abs=1e-12)
    heads = pd.DataFrame({"layer": 0, "head": [0, 1, 2], "kv_head": 0, "ap_overall": 0.5})
    summary = plasticity_summary.with_head_summary(heads, fr)
    assert np.allclose(summary["ap_drop"], summary["ap_first_20"] - summary["ap_last_20"])


def test_bins_average_the_points_inside_them():
    profile = profile_frame(16, n_heads=1)  # ρ = (i + ½) / 16
    fr = plasticity_summary.fractions(profile)
    ap = profile["ap"].to_numpy()
    decile0 = fr[(fr["scheme"] == "decile") & (fr["bin"] == 0)].iloc[0]
    assert decile0["n_points"] == 2 and decile0["ap"] == pytest.approx(ap[:2].mean())  # ρ = 1/32, 3/32
    quintile0 = fr[(fr["scheme"] == "quintile") & (fr["bin"] == 0)].iloc[0]
    assert quintile0["n_points"] == 3 and quintile0["ap"] == pytest.approx(ap[:3].mean())  # up to ρ = 5/32
    length0 = fr[(fr["scheme"] == "length") & (fr["bin"] == 0)].iloc[0]  # [0, 1/16): the first point
    assert length0["ap"] == pytest.approx(ap[0])
    length4 = fr[(fr["scheme"] == "length") & (fr["bin"] == 4)].iloc[0]  # [1/2, 1): the last 8 points
    assert length4["ap"] == pytest.approx(ap[8:].mean())


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    """The CLI on tiny-qwen3's six checkpoints at the full context (2048 tokens), with scores."""
    root = tmp_path_factory.mktemp("plasticity")
    steps = [0, 100, 200, 400, 800, 1600]
    scores = pd.DataFrame({"checkpoint": [f"step-{s:06d}" for s in steps], "score": [1.0, 3.0, 2.5, 4.0, 5.5, 6.0]})
    scores.to_csv(root / "scores.csv", index=False)
    args = [
        "plasticity",
        "--model",
        "tiny-qwen3",
        "--checkpoints",
        "--n-examples",
        "2",
        "--out",
        str(root / "out"),
        "--scores",
        str(root / "scores.csv"),
        "--quiet",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return root, result.output


def test_cli_series_writes_tables_figures_and_report(series_run):
    root, output = series_run
    out = root / "out"
    report = pd.read_csv(out / "model_report.csv")
    assert report["checkpoint"].tolist() == [f"step-{s:06d}" for s in (0, 100, 200, 400, 800, 1600)]
    assert (report["context_length"] == 2048).all() and (report["bucket_size"] == 128).all()
    assert report[["ap_overall", "ap_first_20", "ap_last_20"]].apply(lambda c: c.between(0, 1)).all().all()
    assert np.allclose(report["ap_drop"], report["ap_first_20"] - report["ap_last_20"], atol=1e-12)
    assert report[[f"decile_{i}" for i in range(10)]].notna().all().all()
    heads = pd.read_csv(out / "heads.csv")
    assert len(heads) == 6 * 32 and heads["mode"].eq("thesis").all()
    components = pd.read_csv(out / "components.csv")
    assert np.allclose(components.groupby(["checkpoint", "layer", "head"])["component_weight"].sum(), 1.0)
    heatmap = pd.read_csv(out / "heatmap.csv")
    assert (heatmap["n_pairs"] > 0).all()
    assert ((heatmap["distance_bin"] + 1) * 128 > heatmap["delta_bin"] * 128 / 2).all()  # feasible bins only
    correlations = pd.read_csv(out / "score_correlations.csv")
    assert set(correlations["metric"]) == {"ap_overall", "ap_first_20", "ap_last_20", "ap_drop"}
    assert correlations["r"].between(-1, 1).all() and (correlations["n"] == 6).all()
    for name in (
        "profile",
        "heatmap",
        "component_weights",
        "profiles_comparison",
        "heatmaps_comparison",
        "component_weights_comparison",
        "ap_drop_vs_score",
    ):
        assert_png_written(out / "figures" / f"{name}.png", out / "figures")
    meta = json.loads((out / "meta.json").read_text())
    assert "ceil(sliding_window / bucket_size)" in meta["inputs"][0]["window_rule"]
    assert "step-001600: ap_overall" in output


def test_rerun_reuses_captures_and_reproduces_the_tables(series_run):
    root, _ = series_run
    before = pd.read_csv(root / "out" / "heads.csv")
    result = CliRunner().invoke(
        main,
        [
            "plasticity",
            "--qk",
            str(root / "out" / "qk" / "step-000800"),
            "--qk",
            str(root / "out" / "qk" / "step-001600"),
            "--out",
            str(root / "again"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    again = pd.read_csv(root / "again" / "heads.csv")
    expected = before[before["checkpoint"].isin(["step-000800", "step-001600"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, expected)


def test_published_mode_and_per_length_scores(series_run):
    root, _ = series_run
    qk = root / "out" / "qk" / "step-001600"
    scores = pd.DataFrame({"checkpoint": "step-001600", "length": [256, 512, 1024, 2048], "score": [9, 8, 8.5, 6]})
    scores.to_csv(root / "lengths.csv", index=False)
    result = CliRunner().invoke(
        main,
        [
            "plasticity",
            "--qk",
            str(qk),
            "--mode",
            "published",
            "--out",
            str(root / "published"),
            "--scores",
            str(root / "lengths.csv"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    out = root / "published"
    cells = pd.read_csv(out / "cells.csv")
    assert (cells["q_cell"] >= 1).all() and (cells["k_bucket"] < cells["q_cell"]).all()
    assert len(cells) == 32 * 120  # 16 buckets: every (j, c < j) cell of every head
    heads = pd.read_csv(out / "heads.csv")
    means = cells.groupby(["layer", "head"])["ap"].mean().to_numpy()
    assert np.allclose(heads["ap_overall"], means)  # published: the unweighted cell mean
    assert_png_written(out / "figures" / "bucket_heatmap.png", out / "figures")
    correlations = pd.read_csv(out / "score_correlations.csv")
    assert set(correlations["scope"]) == {"lengths"} and (correlations["n"] == 4).all()


def test_cli_tiny_llama_at_full_context(tmp_path):
    result = CliRunner().invoke(
        main, ["plasticity", "--model", "tiny-llama", "--n-examples", "1", "--out", str(tmp_path), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    report = pd.read_csv(tmp_path / "model_report.csv")
    assert report["context_length"].tolist() == [2048] and report["n_heads"].tolist() == [32]
    # A folder without a step (NaN) still gets its quintiles and length bins.
    assert report[["ap_first_20", "ap_last_20", "ap_drop", "quintile_2", "ap_len_4"]].notna().all().all()
    assert report["ap_overall_rope"].iloc[0] == pytest.approx(report["ap_overall"].iloc[0])
    assert math.isnan(report["ap_overall_nope"].iloc[0])


def write_sniffer_capture(folder: Path, windows=(None, None), n=64, d=8, bucket=16):
    """A qk-sniffer-style folder (no spectra_capture.json): q of heads 0, 1 and k of KV head 0."""
    rng = np.random.default_rng(0)
    positions = np.tile(np.arange(n // 2), 2)
    example = np.repeat([0, 1], n // 2)
    for name, window in (("l00h00q", windows[0]), ("l00h01q", windows[1]), ("l00h00k", None)):
        values = rng.normal(size=(n, d)).astype(np.float32) + positions[:, None] * 0.05
        if isinstance(window, list):
            sliding = pa.array(window * (n // len(window)), type=pa.int64())
        elif window is None:
            sliding = pa.nulls(n)
        else:
            sliding = pa.array([window] * n, type=pa.int64())
        table = pa.table(
            {
                "bucket": pa.array(positions // bucket, pa.int32()),
                "example_id": pa.array(example, pa.int32()),
                "position": pa.array(positions, pa.int32()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), d),
                "sliding_window": sliding,
            }
        )
        (folder / name).mkdir(parents=True)
        pq.write_table(table, folder / name / "data.parquet")


def test_qk_sniffer_folders_infer_buckets_and_windows(tmp_path):
    write_sniffer_capture(tmp_path, windows=(None, 20))
    tables = plasticity.analyze(tmp_path, mode="published", gqa_group=2)
    assert tables.meta["bucket_size"] == 16 and tables.meta["context_length"] == 32
    assert tables.heads["kv_head"].tolist() == [0, 0]
    assert tables.heads["lookback_buckets"].tolist() == [0, 2]  # ceil(20 / 16)
    with pytest.raises(ValueError, match="gqa_group"):
        plasticity.analyze(tmp_path)


def test_mixed_sliding_windows_are_an_error(tmp_path):
    write_sniffer_capture(tmp_path, windows=([4, 8], None))
    with pytest.raises(ValueError, match="sliding_window: mixed"):
        plasticity.analyze(tmp_path, gqa_group=2)


def test_bad_folders_and_heads(tmp_path):
    with pytest.raises(ValueError, match="qk: no query captures"):
        plasticity.analyze(tmp_path, gqa_group=1)
    write_sniffer_capture(tmp_path)
    with pytest.raises(ValueError, match=r"heads: \[\(3, 0\)\] not captured"):
        plasticity.analyze(tmp_path, gqa_group=2, heads=[(3, 0)])
    with pytest.raises(ValueError, match="mode"):
        plasticity.analyze(tmp_path, gqa_group=2, mode="bucketed")


def test_cli_needs_one_source(tmp_path):
    result = CliRunner().invoke(main, ["plasticity", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "give either --qk" in result.output


def test_random_llama_at_8192_tokens_end_to_end(tmp_path):
    from spectra.jobs.plasticity.run import capture_random_llama, run_plasticity

    meta = capture_random_llama(tmp_path / "qk", context_length=8192, n_examples=1)
    assert meta["peak_rss_mib"] > 0 and meta["model"]["head_dim"] == 64
    run = run_plasticity([tmp_path / "qk"], tmp_path / "out")
    assert len(run.heads) == 16 and run.report["context_length"].iloc[0] == 8192
    assert run.report["bucket_size"].iloc[0] == 512 and (run.heads["n_q_tokens"] == 8192).all()
    assert run.heads["ap_overall"].between(0, 1).all()
