"""spectra.figures.geometry: every figure of the QK geometry tables is written atomically as a
readable PNG, checkpoints are ordered by step, and bad input is refused with a clear error."""

import numpy as np
import pandas as pd
import pytest

from spectra.figures import geometry as gf
from spectra.geometry import PC0_CLASSES, checkpoint_order
from spectra.testing.tolerance import assert_png_written

N_LAYERS, N_HEADS = 6, 4
STEPS = {"step-0": 0, "step-100": 100, "step-1000": 1000}
FLOATS = [
    "pc0_r_q",
    "pc0_r_k",
    "bias_strength",
    "mu_q_a",
    "alpha_k",
    "alpha_q",
    "r_q_a",
    "r_k_a",
    "plane_var_fraction",
    "separation_strength",
    "p_q",
    "p_k",
]


def _heads(t=1.0, seed=0):
    """One row per (layer, query head); positional structure and bias grow with depth and ``t``."""
    rng = np.random.default_rng(seed)
    layer, head = np.divmod(np.arange(N_LAYERS * N_HEADS), N_HEADS)
    depth = layer / (N_LAYERS - 1)
    n = layer.size
    frame = pd.DataFrame({"layer": layer.astype(np.int64), "head": head.astype(np.int64)})
    frame["pc0_r_q"] = np.clip(0.2 + 0.6 * t * depth + rng.normal(0, 0.05, n), 0, 1)
    frame["pc0_r_k"] = np.clip(-0.3 + 0.9 * t * depth + rng.normal(0, 0.05, n), -1, 1)
    frame["mu_q_a"] = 0.5 * t * depth + rng.normal(0, 0.1, n)
    frame["alpha_k"] = -0.2 + t * depth + rng.normal(0, 0.1, n)
    frame["bias_strength"] = frame["mu_q_a"] * frame["alpha_k"]
    for column in set(FLOATS) - set(frame):
        frame[column] = rng.uniform(0, 1, n)
    frame["pc0_class"] = [PC0_CLASSES[i % len(PC0_CLASSES)] for i in range(n)]
    return frame


def _series(order=("step-1000", "step-0", "step-100")):
    """The checkpoints deliberately out of step order."""
    return pd.concat(
        [_heads(t=STEPS[c] / 1000, seed=i).assign(checkpoint=c, step=STEPS[c]) for i, c in enumerate(order)],
        ignore_index=True,
    )


def test_synthetic_tables_follow_the_contract():
    heads, series = _heads(), _series()
    assert {"layer", "head", "pc0_class", *FLOATS} <= set(heads.columns)
    assert set(heads["pc0_class"]) == set(PC0_CLASSES)
    assert len(series) == 3 * N_LAYERS * N_HEADS and list(series["checkpoint"].unique())[0] == "step-1000"
    assert (heads["pc0_r_k"] < 0).any() and (heads["pc0_r_k"] > 0).any()


# ---------------------------------------------------------------------------------------------
# every figure, on the synthetic tables
# ---------------------------------------------------------------------------------------------


def test_existing_figures(tmp_path):
    assert_png_written(gf.plot_pc0_scatter(_heads(), tmp_path / "pc0.png"), tmp_path)
    comps = pd.DataFrame(
        {
            "layer": 0,
            "head": np.repeat([0, 1], 4),
            "pc": np.tile(range(4), 2),
            "explained_variance": [0.5, 0.2, 0.1, 0.05, 0.6, 0.2, 0.05, 0.01],
        }
    )
    assert_png_written(gf.plot_explained_variance(comps, tmp_path / "ev.png"), tmp_path)


def test_depth_heatmaps(tmp_path):
    heads = _heads().iloc[1:]  # an absent (layer, head) cell
    heads.loc[heads.index[:3], "bias_strength"] = np.nan
    path = gf.plot_depth_heatmaps(heads, tmp_path / "depth.png")
    assert path == tmp_path / "depth.png"
    assert_png_written(path, tmp_path)
    # Three metrics (a blank fourth slot), and a str path in a new folder.
    path = gf.plot_depth_heatmaps(heads, str(tmp_path / "sub" / "three.png"), ["p_q", "alpha_k", "r_q_a"])
    assert_png_written(path, tmp_path / "sub")


def test_depth_heatmaps_all_nan_metric(tmp_path):
    heads = _heads().assign(bias_strength=np.nan)
    assert_png_written(gf.plot_depth_heatmaps(heads, tmp_path / "nan.png", "bias_strength"), tmp_path)


def test_series_depth_heatmap(tmp_path):
    assert_png_written(gf.plot_series_depth_heatmap(_series(), tmp_path / "series.png"), tmp_path)
    path = gf.plot_series_depth_heatmap(_series(), tmp_path / "r.png", metric="plane_var_fraction", n_bins=3)
    assert_png_written(path, tmp_path)


def test_bias_decomposition(tmp_path):
    assert_png_written(gf.plot_bias_decomposition(_series(), tmp_path / "bias.png"), tmp_path)


def test_class_shares(tmp_path):
    series = _series()
    series.loc[series.index[:5], "pc0_class"] = np.nan  # unclassified heads leave a gap
    assert_png_written(gf.plot_class_shares(series, tmp_path / "shares.png"), tmp_path)


def test_pc_scatter(tmp_path):
    rng = np.random.default_rng(0)
    positions = np.tile(np.arange(64), 2)
    is_query = np.r_[np.ones(64, bool), np.zeros(64, bool)]
    pc0 = np.cos(positions / 20) + rng.normal(0, 0.05, 128)
    pc1 = np.sin(positions / 20) + 0.5 * is_query
    path = gf.plot_pc_scatter(pc0, pc1, positions, is_query, tmp_path / "pc.png", title="layer 3, head 1")
    assert_png_written(path, tmp_path)
    # Lists, and only queries.
    path = gf.plot_pc_scatter([0.0, 1.0], [1.0, 0.0], [0, 1], [True, True], tmp_path / "q.png")
    assert_png_written(path, tmp_path)


def test_single_checkpoint(tmp_path):
    series = _series()[lambda s: s["checkpoint"] == "step-0"]
    assert_png_written(gf.plot_series_depth_heatmap(series, tmp_path / "a.png"), tmp_path)
    assert_png_written(gf.plot_bias_decomposition(series, tmp_path / "b.png"), tmp_path)
    assert_png_written(gf.plot_class_shares(series, tmp_path / "c.png"), tmp_path)


def test_overwrite_in_place(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    gf.plot_class_shares(_series(), target)
    assert_png_written(target, tmp_path)


# ---------------------------------------------------------------------------------------------
# checkpoint order and depth bins
# ---------------------------------------------------------------------------------------------


def test_checkpoints_are_ordered_by_step():
    assert checkpoint_order(_series()) == ["step-0", "step-100", "step-1000"]
    # Without a step, or with NaN steps, first appearance decides (after the stepped ones).
    assert checkpoint_order(_series().drop(columns="step")) == ["step-1000", "step-0", "step-100"]
    partial = _series().assign(step=lambda s: s["step"].where(s["checkpoint"] != "step-1000"))
    assert checkpoint_order(partial) == ["step-0", "step-100", "step-1000"]
    unknown = _series(("step-100", "step-0")).assign(step=np.nan)
    assert checkpoint_order(unknown) == ["step-100", "step-0"]


def _drawn(monkeypatch, call):
    """The images and x tick labels a figure function draws, captured from its Figure."""
    captured = []
    monkeypatch.setattr(gf, "save_figure", lambda fig, path: captured.append(fig) or path)
    call()
    (fig,) = captured
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    return axes, [[t.get_text() for t in ax.get_xticklabels()] for ax in axes]


def test_figures_draw_checkpoints_in_step_order(monkeypatch, tmp_path):
    want = ["step-0", "step-100", "step-1000"]
    for call in (gf.plot_series_depth_heatmap, gf.plot_bias_decomposition, gf.plot_class_shares):
        _, ticks = _drawn(monkeypatch, lambda call=call: call(_series(), tmp_path / "x.png"))
        assert all(labels == want for labels in ticks), (call.__name__, ticks)


def test_series_depth_bins(monkeypatch, tmp_path):
    # Layers 0..10 over 10 bins: layer 10 (depth 1) joins layer 9 in the last bin.
    series = pd.DataFrame({"checkpoint": "c", "step": 0, "layer": np.arange(11), "bias_strength": np.arange(11.0)})
    axes, _ = _drawn(monkeypatch, lambda: gf.plot_series_depth_heatmap(series, tmp_path / "x.png"))
    grid = axes[0].images[0].get_array()
    np.testing.assert_allclose(grid[:, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9.5])
    # Two bins over layers 0..3: depths 0, 1/3 | 2/3, 1; the middle of five bins stays blank.
    series = series[series["layer"] <= 3]
    axes, _ = _drawn(monkeypatch, lambda: gf.plot_series_depth_heatmap(series, tmp_path / "x.png", n_bins=2))
    np.testing.assert_allclose(axes[0].images[0].get_array()[:, 0], [0.5, 2.5])
    axes, _ = _drawn(monkeypatch, lambda: gf.plot_series_depth_heatmap(series, tmp_path / "x.png", n_bins=5))
    assert list(np.ma.getmaskarray(axes[0].images[0].get_array())[:, 0]) == [False, False, True, False, False]


def test_heatmap_colour_maps(monkeypatch, tmp_path):
    heads = _heads()
    axes, _ = _drawn(monkeypatch, lambda: gf.plot_depth_heatmaps(heads, tmp_path / "x.png", ["pc0_r_k", "p_q"]))
    signed, unsigned = (ax.images[0] for ax in axes)
    assert signed.get_cmap().name == "RdBu_r" and signed.norm.vmin == -signed.norm.vmax
    assert unsigned.get_cmap().name == "viridis"


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

CALLS = {
    "pc0_scatter": (gf.plot_pc0_scatter, "heads", "pc0_class"),
    "depth_heatmaps": (gf.plot_depth_heatmaps, "heads", "plane_var_fraction"),
    "series_depth_heatmap": (gf.plot_series_depth_heatmap, "series", "bias_strength"),
    "bias_decomposition": (gf.plot_bias_decomposition, "series", "alpha_k"),
    "class_shares": (gf.plot_class_shares, "series", "checkpoint"),
}


def _table(kind):
    return _heads() if kind == "heads" else _series()


@pytest.mark.parametrize("name", list(CALLS))
def test_missing_columns_raise(tmp_path, name):
    call, kind, column = CALLS[name]
    with pytest.raises(KeyError, match=f"{kind} has no column\\(s\\) \\['{column}'\\].*it has"):
        call(_table(kind).drop(columns=column), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", list(CALLS))
def test_empty_frames_raise(tmp_path, name):
    call, kind, _ = CALLS[name]
    with pytest.raises(ValueError, match=f"{kind} is empty"):
        call(_table(kind).iloc[:0], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_explained_variance_missing_column(tmp_path):
    with pytest.raises(KeyError, match=r"components has no column\(s\) \['explained_variance'\]"):
        gf.plot_explained_variance(pd.DataFrame({"pc": [0, 1]}), tmp_path / "x.png")


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(KeyError, match=r"heads has no column\(s\) \['bias_strenght'\]"):
        gf.plot_depth_heatmaps(_heads(), tmp_path / "x.png", ["pc0_r_q", "bias_strenght"])
    with pytest.raises(ValueError, match="metrics is empty"):
        gf.plot_depth_heatmaps(_heads(), tmp_path / "x.png", [])
    with pytest.raises(KeyError, match=r"series has no column\(s\) \['nope'\]"):
        gf.plot_series_depth_heatmap(_series(), tmp_path / "x.png", metric="nope")
    for n_bins in (0, 2.5):
        with pytest.raises(ValueError, match="n_bins must be a positive integer"):
            gf.plot_series_depth_heatmap(_series(), tmp_path / "x.png", n_bins=n_bins)
    with pytest.raises(TypeError, match="DataFrame"):
        gf.plot_class_shares({"checkpoint": ["a"]}, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("pc1", "pc1 has 3 values but pc0 has 4"),
        ("positions", "positions has 3 values but pc0 has 4"),
        ("is_query", "is_query has 3 values but pc0 has 4"),
    ],
)
def test_pc_scatter_mismatched_lengths_raise(tmp_path, bad, message):
    arrays = {"pc0": np.zeros(4), "pc1": np.zeros(4), "positions": np.arange(4), "is_query": np.ones(4, bool)}
    arrays[bad] = arrays[bad][:3]
    with pytest.raises(ValueError, match=message):
        gf.plot_pc_scatter(*arrays.values(), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_pc_scatter_empty_or_2d_raise(tmp_path):
    with pytest.raises(ValueError, match="pc0 is empty"):
        gf.plot_pc_scatter([], [], [], [], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"pc1 must be 1-D, not of shape \(2, 2\)"):
        gf.plot_pc_scatter(np.zeros(4), np.zeros((2, 2)), np.arange(4), np.ones(4, bool), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
