"""spectra.figures.dynamics: every figure of the dynamics tables is written atomically as a readable
PNG, and bad input is refused with a clear error."""

import numpy as np
import pandas as pd
import pytest

from spectra.figures import dynamics as df
from spectra.testing.tolerance import assert_png_written

STEPS = [0, 100, 200, 400, 800, 1600]
N_LAYERS, N_KV, N_HEADS, HEAD_DIM = 2, 2, 4, 16
GOLDEN_DIM = 5


def _kv_series(seed=0):
    """Per (step, layer, KV head): KV head 0 is a sink whose norm climbs, KV head 1 a gatherer
    whose norm falls."""
    rng = np.random.default_rng(seed)
    records = []
    for step in STEPS:
        t = np.log1p(step) / np.log1p(STEPS[-1])
        for layer in range(N_LAYERS):
            for kv in range(N_KV):
                norm = 8.0 + (6.0 if kv == 0 else -4.0) * t + layer + rng.normal(0, 0.1)
                stats = {
                    "k_norm_mean": norm,
                    "k_norm_std": 0.5 + 0.1 * t,
                    "k_max_abs_mean": 2.0 + t,
                    "k_participation_ratio_mean": 12.0 - 6.0 * t * (kv == 0) + rng.normal(0, 0.1),
                    "k_one_hotness_mean": 0.1 + 0.3 * t,
                    "k_spectral_pr": 10.0 - 4.0 * t + 0.5 * kv,
                    "k_entropy_rank": 14.0 - 5.0 * t + 0.5 * kv,
                }
                records += [
                    {"step": step, "layer": layer, "kv_head": kv, "stat": s, "value": v} for s, v in stats.items()
                ]
    return _typed(pd.DataFrame.from_records(records), ["step", "layer", "kv_head"])


def _head_series(seed=0):
    rng = np.random.default_rng(seed)
    kv = _kv_series(seed)
    k_norm = kv[kv["stat"] == "k_norm_mean"].set_index(["step", "layer", "kv_head"])["value"]
    records = []
    group = N_HEADS // N_KV
    for step in STEPS:
        for layer in range(N_LAYERS):
            for head in range(N_HEADS):
                kv_head = head // group
                k = float(k_norm[(step, layer, kv_head)])
                q = 6.0 + 0.5 * head + rng.normal(0, 0.1)
                stats = {
                    "q_norm_mean": q,
                    "k_norm_mean": k,
                    "qk_norm_ratio": q / k,
                    "entropy_mean": 3.0 - 0.12 * k + rng.normal(0, 0.05),
                    "sink_mass_mean": 0.02 * k,
                }
                records += [
                    {"step": step, "layer": layer, "head": head, "kv_head": kv_head, "stat": s, "value": v}
                    for s, v in stats.items()
                ]
    return _typed(pd.DataFrame.from_records(records), ["step", "layer", "head", "kv_head"])


def _gamma(per_head=False, seed=0):
    """The k_norm gain: dimension GOLDEN_DIM grows over training (a bright band)."""
    rng = np.random.default_rng(seed)
    parts = []
    for step in STEPS:
        t = np.log1p(step) / np.log1p(STEPS[-1])
        for layer in range(N_LAYERS):
            for head in range(N_KV) if per_head else [-1]:
                values = 1.0 + rng.normal(0, 0.05, HEAD_DIM)
                values[GOLDEN_DIM] += 4.0 * t
                parts.append(
                    pd.DataFrame(
                        {"step": step, "layer": layer, "head": head, "dim": np.arange(HEAD_DIM), "gamma": values}
                    )
                )
    return _typed(pd.concat(parts, ignore_index=True), ["step", "layer", "head", "dim"])


def _typed(frame, int_columns):
    for column in int_columns:
        frame[column] = frame[column].astype(np.int64)
    return frame


def test_synthetic_tables_follow_the_contract():
    kv, heads, gamma = _kv_series(), _head_series(), _gamma(per_head=True)
    assert list(kv.columns) == ["step", "layer", "kv_head", "stat", "value"]
    assert list(heads.columns) == ["step", "layer", "head", "kv_head", "stat", "value"]
    assert list(gamma.columns) == ["step", "layer", "head", "dim", "gamma"]
    assert sorted(kv["step"].unique()) == STEPS
    assert (heads["kv_head"] == heads["head"] // (N_HEADS // N_KV)).all()
    assert sorted(gamma["head"].unique()) == [0, 1] and sorted(_gamma()["head"].unique()) == [-1]


# ---------------------------------------------------------------------------------------------
# every figure, on the synthetic tables
# ---------------------------------------------------------------------------------------------


def test_norm_divergence(tmp_path):
    path = df.plot_norm_divergence(_kv_series(), tmp_path / "norms.png")
    assert path == tmp_path / "norms.png"
    assert_png_written(path, tmp_path)
    path = df.plot_norm_divergence(
        _kv_series(), str(tmp_path / "sub" / "pr.png"), stat="k_participation_ratio_mean", layers=[1]
    )
    assert_png_written(path, tmp_path / "sub")


def test_norm_divergence_with_nan_and_duplicates(tmp_path):
    kv = _kv_series()
    kv.loc[(kv["stat"] == "k_norm_mean") & (kv["kv_head"] == 1) & (kv["step"] == 200), "value"] = np.nan
    kv = pd.concat([kv, kv.iloc[:10]], ignore_index=True)  # repeated rows are averaged
    assert_png_written(df.plot_norm_divergence(kv, tmp_path / "nan.png"), tmp_path)


def test_entropy_vs_norm(tmp_path):
    path = df.plot_entropy_vs_norm(_head_series(), tmp_path / "entropy_norm.png")
    assert_png_written(path, tmp_path)
    path = df.plot_entropy_vs_norm(_head_series(), tmp_path / "layer0.png", layers=0)
    assert_png_written(path, tmp_path)


def test_rank_evolution(tmp_path):
    path = df.plot_rank_evolution(_kv_series(), tmp_path / "rank.png")
    assert_png_written(path, tmp_path)
    # An absent stat is skipped as long as one is present; a single stat as a string.
    kv = _kv_series()
    path = df.plot_rank_evolution(kv[kv["stat"] != "k_participation_ratio_mean"], tmp_path / "rank_skip.png")
    assert_png_written(path, tmp_path)
    path = df.plot_rank_evolution(kv, tmp_path / "one.png", stats="k_entropy_rank")
    assert_png_written(path, tmp_path)


@pytest.mark.parametrize("per_head", [False, True], ids=["shared", "per_head"])
def test_gamma_heatmap(tmp_path, per_head):
    path = df.plot_gamma_heatmap(_gamma(per_head=per_head), tmp_path / "gamma.png")
    assert_png_written(path, tmp_path)


def test_gamma_heatmap_missing_cells_and_layer_choice(tmp_path):
    gamma = _gamma(per_head=True)
    gamma = gamma[~((gamma["step"] == 400) & (gamma["layer"] == 1))]  # a checkpoint without layer 1
    gamma.loc[gamma.index[:3], "gamma"] = np.nan
    assert_png_written(df.plot_gamma_heatmap(gamma, tmp_path / "holes.png"), tmp_path)
    assert_png_written(df.plot_gamma_heatmap(_gamma(), tmp_path / "l1.png", layers=[1]), tmp_path)


def test_qk_ratio(tmp_path):
    path = df.plot_qk_ratio(_head_series(), tmp_path / "qk.png")
    assert_png_written(path, tmp_path)
    # Without kv_head, and with a non-positive ratio (linear y axis).
    heads = _head_series().drop(columns="kv_head")
    heads.loc[(heads["stat"] == "qk_norm_ratio") & (heads["step"] == 0), "value"] = 0.0
    assert_png_written(df.plot_qk_ratio(heads, tmp_path / "qk_lin.png"), tmp_path)


def test_single_checkpoint(tmp_path):
    kv, heads, gamma = _kv_series(), _head_series(), _gamma()
    last = STEPS[-1]
    assert_png_written(df.plot_norm_divergence(kv[kv["step"] == last], tmp_path / "a.png"), tmp_path)
    assert_png_written(df.plot_entropy_vs_norm(heads[heads["step"] == last], tmp_path / "b.png"), tmp_path)
    assert_png_written(df.plot_rank_evolution(kv[kv["step"] == 0], tmp_path / "c.png"), tmp_path)
    assert_png_written(df.plot_gamma_heatmap(gamma[gamma["step"] == 0], tmp_path / "d.png"), tmp_path)
    assert_png_written(df.plot_qk_ratio(heads[heads["step"] == last], tmp_path / "e.png"), tmp_path)


def test_overwrite_in_place(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    df.plot_gamma_heatmap(_gamma(), target)
    assert_png_written(target, tmp_path)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

CALLS = {
    "norm_divergence": lambda kv, heads, gamma, p: df.plot_norm_divergence(kv, p),
    "entropy_vs_norm": lambda kv, heads, gamma, p: df.plot_entropy_vs_norm(heads, p),
    "rank_evolution": lambda kv, heads, gamma, p: df.plot_rank_evolution(kv, p),
    "gamma_heatmap": lambda kv, heads, gamma, p: df.plot_gamma_heatmap(gamma, p),
    "qk_ratio": lambda kv, heads, gamma, p: df.plot_qk_ratio(heads, p),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_empty_frames_raise(tmp_path, name):
    kv, heads, gamma = _kv_series(), _head_series(), _gamma()
    with pytest.raises(ValueError, match="is empty"):
        CALLS[name](kv.iloc[:0], heads.iloc[:0], gamma.iloc[:0], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", list(CALLS))
def test_missing_columns_raise(tmp_path, name):
    kv, heads, gamma = _kv_series(), _head_series(), _gamma()
    column = "gamma" if name == "gamma_heatmap" else "value"
    with pytest.raises(KeyError, match=f"no column\\(s\\) \\['{column}'\\].*it has"):
        CALLS[name](
            kv.drop(columns="value"), heads.drop(columns="value"), gamma.drop(columns="gamma"), tmp_path / "x.png"
        )
    assert list(tmp_path.iterdir()) == []


def test_not_a_frame_raises(tmp_path):
    with pytest.raises(TypeError, match="DataFrame"):
        df.plot_norm_divergence({"step": [0]}, tmp_path / "x.png")


def test_missing_stats_name_the_stat_and_those_present(tmp_path):
    kv, heads = _kv_series(), _head_series()
    with pytest.raises(KeyError, match=r"no stat 'k_nrom_mean'.*stats present: \[.*'k_norm_mean'"):
        df.plot_norm_divergence(kv, tmp_path / "x.png", stat="k_nrom_mean")
    with pytest.raises(KeyError, match=r"no stat\(s\) \['entropy_mean'\].*stats present: \[.*'q_norm_mean'"):
        df.plot_entropy_vs_norm(heads[heads["stat"] != "entropy_mean"], tmp_path / "x.png")
    with pytest.raises(KeyError, match=r"none of the stats \['foo', 'bar'\].*stats present: \[.*'k_spectral_pr'"):
        df.plot_rank_evolution(kv, tmp_path / "x.png", stats=["foo", "bar"])
    with pytest.raises(ValueError, match="stats is empty"):
        df.plot_rank_evolution(kv, tmp_path / "x.png", stats=[])
    with pytest.raises(KeyError, match=r"no stat 'qk_norm_ratio'.*stats present"):
        df.plot_qk_ratio(heads[heads["stat"] != "qk_norm_ratio"], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_unknown_layers_raise(tmp_path):
    with pytest.raises(ValueError, match=r"no rows for layer\(s\) \[7\]; it has layers \[0, 1\]"):
        df.plot_norm_divergence(_kv_series(), tmp_path / "x.png", layers=[0, 7])
    with pytest.raises(ValueError, match="layers is empty"):
        df.plot_gamma_heatmap(_gamma(), tmp_path / "x.png", layers=[])
    assert list(tmp_path.iterdir()) == []
