"""spectra.metrics.summaries: summary tables against direct pandas/numpy, figures on disk."""

import os

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread
from scipy import stats

from spectra.figures import profile as profile_figures
from spectra.figures.profile import plot_entropy_vs_norm, plot_head_heatmaps
from spectra.metrics.summaries import (
    METRICS,
    head_summary,
    layer_summary,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frame(samples=3, layers=3, heads=4, tokens=24, seed=0, metrics=("entropy", "max_attn", "k_eff", "q_norm")):
    """A frame with profile's contract: NaN attention metrics for token < 2, float32 metrics."""
    rng = np.random.default_rng(seed)
    n = samples * layers * heads * tokens
    frame = pd.DataFrame(
        {
            "sample": np.repeat(np.arange(samples, dtype=np.int64), layers * heads * tokens),
            "layer": np.tile(np.repeat(np.arange(layers, dtype=np.int16), heads * tokens), samples),
            "head": np.tile(np.repeat(np.arange(heads, dtype=np.int16), tokens), samples * layers),
            "token": np.tile(np.arange(tokens, dtype=np.int32), samples * layers * heads),
        }
    )
    for i, metric in enumerate(metrics):
        values = rng.normal(3.0 + i + 0.1 * frame["layer"].to_numpy(), 1.0, n).astype(np.float32)
        if metric != "q_norm":
            values[frame["token"].to_numpy() < 2] = np.nan
            values[rng.random(n) < 0.05] = np.nan
        frame[metric] = values
    return frame


def _assert_png(path):
    assert path.is_file()
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert path.stat().st_size > 1000


def _no_tmp(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")] == []


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def test_head_summary_matches_direct_computation():
    frame = _frame()
    summary = head_summary(frame)
    metrics = ["entropy", "max_attn", "k_eff", "q_norm"]
    assert list(summary.columns) == ["layer", "head"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std", "n")]
    assert len(summary) == 3 * 4
    for _, row in summary.iterrows():
        sub = frame[(frame["layer"] == row["layer"]) & (frame["head"] == row["head"])]
        for metric in metrics:
            values = sub[metric].to_numpy(np.float64)
            values = values[~np.isnan(values)]
            assert row[f"{metric}_n"] == values.size
            assert row[f"{metric}_mean"] == pytest.approx(values.mean(), rel=1e-6)
            assert row[f"{metric}_std"] == pytest.approx(values.std(ddof=1), rel=1e-5)
    # The attention metrics skip the ignore_first rows: 3 samples × 22 tokens at most.
    assert (summary["entropy_n"] <= 3 * 22).all() and (summary["q_norm_n"] == 3 * 24).all()
    assert summary["entropy_n"].dtype == np.int64 and summary["entropy_mean"].dtype == np.float64


def test_head_summary_nan_edge_cases_and_metric_selection():
    frame = pd.DataFrame(
        {
            "sample": 0,
            "layer": np.int16(0),
            "head": np.array([0, 0, 1, 1, 2, 2], dtype=np.int16),
            "token": [0, 1, 0, 1, 0, 1],
            "entropy": np.array([np.nan, np.nan, np.nan, 2.0, 1.0, 3.0], dtype=np.float32),
            "k_norm": np.array([1, 2, 3, 4, 5, 6], dtype=np.float32),
            "unrelated": 1.0,
        }
    )
    summary = head_summary(frame)
    assert [c for c in summary.columns if c.endswith("_mean")] == ["entropy_mean", "k_norm_mean"]
    assert summary["entropy_n"].tolist() == [0, 1, 2]
    assert np.isnan(summary.loc[0, "entropy_mean"]) and np.isnan(summary.loc[0, "entropy_std"])
    assert summary.loc[1, "entropy_mean"] == 2.0 and np.isnan(summary.loc[1, "entropy_std"])
    assert summary.loc[2, "entropy_std"] == pytest.approx(np.sqrt(2.0))
    only = head_summary(frame, metrics=["k_norm"])
    assert list(only.columns) == ["layer", "head", "k_norm_mean", "k_norm_std", "k_norm_n"]
    with pytest.raises(KeyError, match="sink_mass"):
        head_summary(frame, metrics=["sink_mass"])


def test_metric_order_follows_the_contract():
    frame = _frame(metrics=("q_norm", "sink_mass", "entropy"))
    summary = head_summary(frame)
    means = [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]
    assert means == [m for m in METRICS if m in ("q_norm", "sink_mass", "entropy")]


def test_layer_summary_matches_nanmean():
    frame = _frame(seed=3)
    out = layer_summary(frame)
    assert list(out.columns) == ["layer", "entropy", "max_attn", "k_eff", "q_norm"]
    assert out["layer"].tolist() == [0, 1, 2]
    for _, row in out.iterrows():
        sub = frame[frame["layer"] == row["layer"]]
        for metric in ("entropy", "max_attn", "k_eff", "q_norm"):
            assert row[metric] == pytest.approx(np.nanmean(sub[metric].to_numpy(np.float64)), rel=1e-6)


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def test_head_heatmaps_written_as_png(tmp_path):
    summary = head_summary(_frame())
    out = tmp_path / "figures"
    paths = plot_head_heatmaps(summary, out)
    assert [p.name for p in paths] == ["head_entropy.png", "head_max_attn.png", "head_k_eff.png"]  # no sink_mass
    for path in paths:
        _assert_png(path)
        assert path.parent == out
    assert _no_tmp(out)
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths)
    with pytest.raises(KeyError, match="sink_mass_mean"):
        plot_head_heatmaps(summary, out, metrics=["entropy", "sink_mass"])


def _grey_pixels(path):
    image = imread(path)[..., :3]
    grey = np.all(np.abs(image - 211 / 255) < 0.01, axis=-1)  # matplotlib "lightgrey"
    return int(grey.sum())


def test_heatmap_shows_missing_heads_in_grey(tmp_path):
    summary = head_summary(_frame())
    complete = plot_head_heatmaps(summary, tmp_path / "complete", metrics=["entropy"])[0]
    holed = summary[~((summary["layer"] == 1) & (summary["head"] == 2))]
    holed = plot_head_heatmaps(holed, tmp_path / "holed", metrics=["entropy"])[0]
    # Anti-aliased text leaves a few grey pixels; a missing cell is one of 12 in a ~4×3 inch axes.
    assert _grey_pixels(holed) - _grey_pixels(complete) > 2000


def test_heatmap_values_drive_the_colours(tmp_path):
    summary = head_summary(_frame())
    a = plot_head_heatmaps(summary, tmp_path / "a", metrics=["entropy"])[0]
    flipped = summary.assign(entropy_mean=summary["entropy_mean"].to_numpy()[::-1])
    b = plot_head_heatmaps(flipped, tmp_path / "b", metrics=["entropy"])[0]
    assert not np.array_equal(imread(a), imread(b))


def test_entropy_vs_norm_scatter(tmp_path):
    frame = _frame(samples=4, layers=4, heads=4, tokens=64, seed=5)
    frame["entropy"] = (0.3 * frame["q_norm"] + frame["entropy"]).astype(np.float32)
    path = plot_entropy_vs_norm(frame, tmp_path / "sub" / "scatter.png", max_points=500, seed=0)
    assert path == tmp_path / "sub" / "scatter.png"
    _assert_png(path)
    assert _no_tmp(path.parent)
    # Same frame and seed: the same picture; another seed draws other points.
    again = plot_entropy_vs_norm(frame, tmp_path / "again.png", max_points=500, seed=0)
    other = plot_entropy_vs_norm(frame, tmp_path / "other.png", max_points=500, seed=1)
    assert np.array_equal(imread(path), imread(again))
    assert not np.array_equal(imread(path), imread(other))


def test_entropy_vs_norm_title_has_pooled_pearson_r():
    frame = _frame(samples=2, layers=2, heads=2, tokens=300, seed=6)
    frame["entropy"] = (0.5 * frame["q_norm"] + frame["entropy"]).astype(np.float32)
    keep = frame["entropy"].notna()
    ref = stats.pearsonr(frame.loc[keep, "q_norm"].astype(float), frame.loc[keep, "entropy"].astype(float))
    fig = profile_figures._entropy_vs_norm_figure(frame, max_points=100, seed=0)
    title = fig.axes[0].get_title()
    assert f"r = {ref.statistic:.3f}" in title
    assert f"n = {int(keep.sum()):,}" in title and "100 drawn" in title
    (points,) = fig.axes[0].collections
    assert len(points.get_offsets()) == 100


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    summary = head_summary(_frame())
    target = tmp_path / "head_entropy.png"
    target.write_bytes(b"old")

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_head_heatmaps(summary, tmp_path, metrics=["entropy"])
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["head_entropy.png"]
