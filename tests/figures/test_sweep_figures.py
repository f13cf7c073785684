"""spectra.figures.sweep: every figure is written atomically as a readable PNG, and bad
input is refused with a clear error."""

import numpy as np
import pandas as pd
import pytest

from spectra.figures import sweep as sf
from spectra.testing.tolerance import assert_png_written

ALPHAS = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
HEADS = [(0, 1), (1, 0), (1, 3)]
FLAT_K_HEAD = (1, 3)  # its entropy does not move under K scaling


def _sweep(seed=0, samples=2, modes=("local", "propagated")):
    """A sweep table with the contract's columns: local and propagated modes, q and k kinds."""
    rng = np.random.default_rng(seed)
    records = []
    for mode in modes:
        for kind in ("q", "k"):
            for layer, head in HEADS:
                for alpha in ALPHAS:
                    for sample in range(samples):
                        base = 2.5 + 0.3 * layer + 0.1 * head + 0.05 * sample
                        slope = 0.0 if (kind == "k" and (layer, head) == FLAT_K_HEAD) else (0.6 if kind == "q" else 0.3)
                        entropy = base - slope * np.log(alpha) + rng.normal(0.0, 0.02)
                        max_attn = float(np.clip(0.3 + 0.8 * slope * np.log(alpha) / 4 + rng.normal(0, 0.01), 0.01, 1))
                        row = {
                            "mode": mode,
                            "kind": kind,
                            "layer": layer,
                            "head": head,
                            "alpha": alpha,
                            "sample": sample,
                            "entropy": entropy,
                            "max_attn": max_attn,
                            "k_eff": float(np.exp(entropy)),
                            "n_tokens": 30,
                            "entropy_slope": -slope,
                            "max_attn_slope": 0.2 * slope,
                        }
                        if mode == "propagated":
                            kl = 0.0 if slope == 0.0 else 0.1 * slope * np.log(alpha) ** 2
                            row.update(
                                kl_logits=kl + abs(rng.normal(0, 0.001)),
                                delta_loss=0.5 * kl,
                                group_entropy_shift=0.0 if kind == "q" else 0.05 * np.log(alpha),
                                downstream_entropy_shift=0.02 * abs(np.log(alpha)),
                            )
                        records.append(row)
    frame = pd.DataFrame.from_records(records)
    for column in ("layer", "head", "sample", "n_tokens"):
        frame[column] = frame[column].astype(np.int64)
    return frame


def _gains():
    return pd.DataFrame(
        {
            "layer": np.array([0, 1, 1, 2], dtype=np.int64),
            "head": np.array([1, 0, 3, 2], dtype=np.int64),  # (2, 2) has no sweep rows
            "gain_max_attn": [0.12, 0.11, np.nan, -0.05],
            "intercept_max_attn": [0.30, 0.31, 0.30, 0.2],
            "r_squared_max_attn": [0.98, 0.95, np.nan, 0.5],
            "gain_entropy": [-0.6, -0.55, -0.6, 0.1],
            "intercept_entropy": [2.6, 2.8, 3.1, 3.0],
            "r_squared_entropy": [0.99, 0.99, 0.98, 0.2],
            "category": ["high", "high", None, "low"],
        }
    )


def _asymmetry():
    return pd.DataFrame(
        {
            "layer": np.array([0, 1, 1], dtype=np.int64),
            "head": np.array([1, 0, 3], dtype=np.int64),
            "q_range": [1.7, 1.7, 1.7],
            "k_range": [0.8, 0.9, 0.0],
            "asymmetry": [2.1, 1.9, np.inf],
            "role": ["query-driven", "mixed", "query-driven"],
            "k_group_entropy_shift": [0.05, np.nan, 0.0],
        }
    )


# ---------------------------------------------------------------------------------------------
# every figure, on the synthetic tables
# ---------------------------------------------------------------------------------------------


def test_metric_vs_scale_mixed_modes_and_kinds(tmp_path):
    path = sf.plot_metric_vs_scale(_sweep(), tmp_path / "exp1.png")
    assert path == tmp_path / "exp1.png"
    assert_png_written(path, tmp_path)


def test_metric_vs_scale_filters(tmp_path):
    sweep = _sweep()
    path = sf.plot_metric_vs_scale(
        sweep, str(tmp_path / "sub" / "exp1_q.png"), metrics="entropy", heads=[(1, 3)], kind="q", mode="local"
    )
    assert_png_written(path, tmp_path / "sub")
    # Slope columns and a single sample (no standard-error band) draw too.
    one = sweep[sweep["sample"] == 0]
    path = sf.plot_metric_vs_scale(
        one, tmp_path / "slopes.png", metrics=["entropy_slope", "max_attn_slope"], kind=["q", "k"], mode=["propagated"]
    )
    assert_png_written(path, tmp_path)


def test_metric_vs_scale_all_nan_metric(tmp_path):
    sweep = _sweep()
    sweep["entropy_slope"] = np.nan  # soft-capped models have no closed form
    path = sf.plot_metric_vs_scale(sweep, tmp_path / "nan.png", metrics=["entropy_slope"])
    assert_png_written(path, tmp_path)


def test_gain_fits(tmp_path):
    path = sf.plot_gain_fits(_sweep(), _gains(), tmp_path / "exp2.png", kind="q", mode="local")
    assert_png_written(path, tmp_path)
    # Defaults: mixed kinds -> q, mixed modes -> propagated; another metric; chosen heads.
    path = sf.plot_gain_fits(_sweep(), _gains(), tmp_path / "exp2_h.png", metric="entropy", heads=[(1, 3), (0, 1)])
    assert_png_written(path, tmp_path)


def test_gain_fits_per_row_kind_and_many_heads(tmp_path):
    sweep = _sweep(modes=("local",))
    gains = pd.concat([_gains().assign(kind="q"), _gains().assign(kind="k")], ignore_index=True)
    path = sf.plot_gain_fits(sweep, gains, tmp_path / "kinds.png")
    assert_png_written(path, tmp_path)
    many = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(4), 5),
            "head": np.tile(np.arange(5), 4),
            "gain_max_attn": 0.1,
            "intercept_max_attn": 0.3,
        }
    )
    path = sf.plot_gain_fits(sweep, many, tmp_path / "many.png")  # 20 gains rows, 12 panels
    assert_png_written(path, tmp_path)


def test_gain_heatmap(tmp_path):
    path = sf.plot_gain_heatmap(_gains(), tmp_path / "exp2b.png")
    assert_png_written(path, tmp_path)
    path = sf.plot_gain_heatmap(
        _gains().drop(columns="category"), tmp_path / "exp2b_entropy.png", metric="entropy", n_layers=4, n_heads=8
    )
    assert_png_written(path, tmp_path)
    all_nan = _gains().assign(gain_max_attn=np.nan)
    assert_png_written(sf.plot_gain_heatmap(all_nan, tmp_path / "nan.png"), tmp_path)


def test_gain_heatmap_category_codes():
    assert sf._category_codes(["high", "low"]) == {"high": "H", "low": "L"}
    codes = sf._category_codes(["high", "hub", "low"])
    assert len(set(codes.values())) == 3


def test_qk_delta_entropy(tmp_path):
    path = sf.plot_qk_delta_entropy(_sweep(), tmp_path / "exp3b.png")  # propagated: with the kl_logits row
    assert_png_written(path, tmp_path)
    path = sf.plot_qk_delta_entropy(_sweep(), tmp_path / "exp3b_local.png", heads=[(1, 3)], mode="local")
    assert_png_written(path, tmp_path)


def test_qk_panel(tmp_path):
    path = sf.plot_qk_panel(_sweep(), _asymmetry(), tmp_path / "qk_panel.png")
    assert_png_written(path, tmp_path)
    bare = _asymmetry().drop(columns=["role", "k_group_entropy_shift"])
    path = sf.plot_qk_panel(_sweep(), bare, tmp_path / "qk_bare.png", heads=[(1, 3), (0, 1)], mode="local")
    assert_png_written(path, tmp_path)


def test_overwrite_in_place(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    sf.plot_gain_heatmap(_gains(), target)
    assert_png_written(target, tmp_path)


# ---------------------------------------------------------------------------------------------
# the curve statistic
# ---------------------------------------------------------------------------------------------


def test_curve_is_mean_of_sample_means_with_standard_error():
    rows = pd.DataFrame({"alpha": [1.0, 1.0, 1.0, 2.0], "sample": [0, 0, 1, 0], "m": [1.0, 3.0, 4.0, 5.0]})
    curve = sf._curve(rows, "m")
    assert curve["alpha"].tolist() == [1.0, 2.0]
    assert curve["mean"].tolist() == [3.0, 5.0]  # mean of the sample means (2, 4), not of the 3 rows
    assert curve["se"].iloc[0] == pytest.approx(np.std([2.0, 4.0], ddof=1) / np.sqrt(2))
    assert np.isnan(curve["se"].iloc[1])
    assert curve["n"].tolist() == [2, 1]


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda s, g, a, p: sf.plot_metric_vs_scale(s, p),
        lambda s, g, a, p: sf.plot_gain_fits(s, g, p),
        lambda s, g, a, p: sf.plot_qk_delta_entropy(s, p),
        lambda s, g, a, p: sf.plot_qk_panel(s, a, p),
    ],
    ids=["metric_vs_scale", "gain_fits", "qk_delta_entropy", "qk_panel"],
)
def test_sweep_missing_column_and_empty(tmp_path, call):
    sweep, gains, asym = _sweep(), _gains(), _asymmetry()
    with pytest.raises(KeyError, match=r"sweep has no column\(s\) \['entropy'|sweep has no column\(s\) \['max_attn'"):
        call(sweep.drop(columns=["entropy", "max_attn"]), gains, asym, tmp_path / "x.png")
    with pytest.raises(KeyError, match="it has"):
        call(sweep.drop(columns=["alpha"]), gains, asym, tmp_path / "x.png")
    with pytest.raises(ValueError, match="sweep is empty"):
        call(sweep.iloc[:0], gains, asym, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_gains_and_asymmetry_bad_input(tmp_path):
    sweep = _sweep()
    with pytest.raises(KeyError, match=r"gains has no column\(s\) \['intercept_max_attn'\]"):
        sf.plot_gain_fits(sweep, _gains().drop(columns="intercept_max_attn"), tmp_path / "x.png")
    with pytest.raises(KeyError, match=r"\['gain_k_eff'\]"):
        sf.plot_gain_heatmap(_gains(), tmp_path / "x.png", metric="k_eff")
    with pytest.raises(ValueError, match="gains is empty"):
        sf.plot_gain_heatmap(_gains().iloc[:0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="gains is empty"):
        sf.plot_gain_fits(sweep, _gains().iloc[:0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="duplicate"):
        sf.plot_gain_heatmap(pd.concat([_gains(), _gains()]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="n_layers"):
        sf.plot_gain_heatmap(_gains(), tmp_path / "x.png", n_layers=2)
    with pytest.raises(KeyError, match=r"asymmetry has no column\(s\) \['asymmetry'\]"):
        sf.plot_qk_panel(sweep, _asymmetry().drop(columns="asymmetry"), tmp_path / "x.png")
    with pytest.raises(ValueError, match="asymmetry is empty"):
        sf.plot_qk_panel(sweep, _asymmetry().iloc[:0], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_bad_selections(tmp_path):
    sweep = _sweep()
    with pytest.raises(ValueError, match=r"no rows for head\(s\) \[\(5, 5\)\]"):
        sf.plot_metric_vs_scale(sweep, tmp_path / "x.png", heads=[(0, 1), (5, 5)])
    with pytest.raises(ValueError, match="kind"):
        sf.plot_metric_vs_scale(sweep, tmp_path / "x.png", kind="logits")
    with pytest.raises(ValueError, match="mode"):
        sf.plot_qk_delta_entropy(sweep, tmp_path / "x.png", mode="nonsense")
    with pytest.raises(ValueError, match="both q and k"):
        sf.plot_qk_delta_entropy(sweep[sweep["kind"] == "q"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="alpha"):
        sf.plot_metric_vs_scale(sweep.assign(alpha=0.0), tmp_path / "x.png")
    with pytest.raises(ValueError, match="metrics is empty"):
        sf.plot_metric_vs_scale(sweep, tmp_path / "x.png", metrics=[])
    assert list(tmp_path.iterdir()) == []
