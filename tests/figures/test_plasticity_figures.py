"""spectra.figures.plasticity: every figure of the attention-plasticity tables is written
atomically as a readable PNG, checkpoints are ordered by step, the (Δ, D) heatmap pools heads
exactly and leaves empty cells NaN, and bad input is refused with a ValueError naming it."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from scipy import stats

from spectra.figures import plasticity as pf
from spectra.figures import plasticity_heatmaps
from spectra.testing.tolerance import assert_png_written

N_LAYERS, N_HEADS, N_CELLS, BUCKET = 2, 3, 8, 1024
CONTEXT = N_CELLS * BUCKET
STEPS = {"step-0": 0, "step-100": 100, "step-1000": 1000}
OUT_OF_ORDER = ("step-1000", "step-0", "step-100")
D = 16


def _heads():
    layer, head = np.divmod(np.arange(N_LAYERS * N_HEADS), N_HEADS)
    return layer, head


def _profile(t=1.0, seed=0):
    """One row per (layer, head, q_cell 1..N_CELLS-1); AP falls with position more as ``t`` grows."""
    rng = np.random.default_rng(seed)
    rows = []
    for layer, head in zip(*_heads(), strict=True):
        q = np.arange(1, N_CELLS)
        tau = (q + 0.5) * BUCKET + rng.normal(0, 20, q.size)
        slope = t * rng.uniform(-0.1, 0.4)
        ap = np.clip(0.7 - slope * tau / CONTEXT + rng.normal(0, 0.02, q.size), 0, 1)
        rows.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "head": head,
                    "q_cell": q,
                    "tau": tau,
                    "context_fraction": tau / CONTEXT,
                    "n_queries": rng.integers(50, 500, q.size),
                    "ap": ap,
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    frame.loc[3, "ap"] = np.nan
    return frame


def _series(make, order=OUT_OF_ORDER, **kwargs):
    """The checkpoints deliberately out of step order; labels not in STEPS have a NaN step."""
    return pd.concat(
        [
            make(t=STEPS.get(c, 500) / 1000, seed=i, **kwargs).assign(checkpoint=c, step=STEPS.get(c, np.nan))
            for i, c in enumerate(order)
        ],
        ignore_index=True,
    )


def _heatmap(t=1.0, seed=0, width=1024, n_pairs=4000):
    """Pairs sampled as the thesis does (keys before the query, same example), binned by Δ and D."""
    rng = np.random.default_rng(seed)
    rows = []
    for layer, head in zip(*_heads(), strict=True):
        tau = rng.integers(2, CONTEXT, n_pairs)
        t1, t2 = (rng.integers(0, tau), rng.integers(0, tau))
        delta, distance = np.abs(t1 - t2), tau - (t1 + t2) / 2
        pp = rng.beta(2 + 4 * t * distance / CONTEXT, 2)
        frame = pd.DataFrame(
            {"delta_bin": delta // width, "distance_bin": (distance // width).astype(np.int64), "pp": pp}
        )
        grouped = frame.groupby(["delta_bin", "distance_bin"])["pp"].agg(pp_sum="sum", n_pairs="size").reset_index()
        rows.append(grouped.assign(layer=layer, head=head, bin_width=width))
    return pd.concat(rows, ignore_index=True)


def _cells(t=1.0, seed=0, thesis=False):
    rng = np.random.default_rng(seed)
    rows = []
    for layer, head in zip(*_heads(), strict=True):
        for q in range(1, N_CELLS):
            k = np.arange(q)
            ap = np.clip(0.5 + 0.3 * (q - k) / N_CELLS * t + rng.normal(0, 0.03, q), 0, 1)
            rows.append(
                pd.DataFrame({"layer": layer, "head": head, "q_cell": q, "k_bucket": np.nan if thesis else k, "ap": ap})
            )
    return pd.concat(rows, ignore_index=True)


def _components(t=1.0, seed=0):
    """Weight on the low-frequency end of each half; the halves near mirror images."""
    rng = np.random.default_rng(seed)
    half = np.clip(np.linspace(-0.2, 1.0, D // 2), 0, None)
    rows = []
    for layer, head in zip(*_heads(), strict=True):
        r2 = np.clip(np.tile(half, 2) * t + rng.uniform(0, 0.05, D), 0, 1)
        rows.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "head": head,
                    "component": np.arange(D),
                    "component_r2": r2,
                    "component_weight": r2 / r2.sum(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _report():
    rng = np.random.default_rng(0)
    labels = ["qwen-4b", "llama-3b", "mistral-7b", "ministral-3b", "smol-3b"]
    first = rng.uniform(0.6, 0.75, len(labels))
    last = first - rng.uniform(0.05, 0.2, len(labels))
    report = pd.DataFrame(
        {
            "checkpoint": labels,
            "step": np.nan,
            "ap_overall": (first + last) / 2,
            "ap_first_20": first,
            "ap_last_20": last,
            "ap_drop": first - last,
        }
    )
    for i in range(5):
        report[f"ap_len_{i}"] = first - (first - last) * i / 4
    scores = pd.DataFrame(
        {
            "checkpoint": labels[::-1],
            "score": 100 - 200 * report["ap_drop"].to_numpy()[::-1] + rng.normal(0, 3, len(labels)),
        }
    )
    return report, scores


def test_synthetic_tables_follow_the_contract():
    profile, heatmap, cells, components = _profile(), _heatmap(), _cells(), _components()
    assert profile["ap"].between(0, 1).sum() == len(profile) - 1 and profile["ap"].isna().sum() == 1
    assert profile["context_fraction"].between(0, 1).all()
    assert (heatmap["pp_sum"] <= heatmap["n_pairs"]).all() and heatmap["bin_width"].nunique() == 1
    assert (cells["k_bucket"] < cells["q_cell"]).all() and cells["ap"].between(0, 1).all()
    np.testing.assert_allclose(components.groupby(["layer", "head"])["component_weight"].sum(), 1.0)
    report, scores = _report()
    assert set(report["checkpoint"]) == set(scores["checkpoint"])


# ---------------------------------------------------------------------------------------------
# every figure writes a PNG
# ---------------------------------------------------------------------------------------------


def test_profile_figure(tmp_path):
    path = pf.profile_figure(_profile(), tmp_path / "plasticity.png")
    assert path == tmp_path / "plasticity.png"
    assert_png_written(path, tmp_path)
    # A single checkpoint of a series, a str path in a new folder.
    profile = _series(_profile)[lambda f: f["checkpoint"] == "step-100"]
    path = pf.profile_figure(profile, str(tmp_path / "sub" / "p.png"), title="step 100", color_by="none")
    assert_png_written(path, tmp_path / "sub")


def test_profiles_comparison_figure(tmp_path):
    assert_png_written(pf.profiles_comparison_figure(_series(_profile), tmp_path / "c.png"), tmp_path)


def test_heatmap_figure(tmp_path):
    assert_png_written(pf.heatmap_figure(_heatmap(), tmp_path / "h.png"), tmp_path)


def test_heatmaps_comparison_figure(tmp_path):
    assert_png_written(pf.heatmaps_comparison_figure(_series(_heatmap), tmp_path / "hc.png"), tmp_path)


def test_bucket_heatmap_figure(tmp_path):
    assert_png_written(pf.bucket_heatmap_figure(_cells(), tmp_path / "b.png"), tmp_path)


def test_component_weights_figure(tmp_path):
    path = pf.component_weights_figure(_series(_components), tmp_path / "ws.png", agg="median", by="checkpoint")
    assert_png_written(path, tmp_path)


def test_score_correlation_figure(tmp_path):
    report, scores = _report()
    assert_png_written(pf.score_correlation_figure(report, scores, tmp_path / "s.png"), tmp_path)


def test_overwrite_in_place(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    pf.bucket_heatmap_figure(_cells(), target, agg="median")
    assert_png_written(target, tmp_path)


# ---------------------------------------------------------------------------------------------
# what is drawn
# ---------------------------------------------------------------------------------------------


def _drawn(monkeypatch, call):
    """The Figure a figure function draws, and its axes other than colour bars."""
    captured = []
    for module in (pf, plasticity_heatmaps):  # the figure functions live in both
        monkeypatch.setattr(module, "save_figure", lambda fig, path: captured.append(fig) or path)
    call()
    (fig,) = captured
    return fig, [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_heatmap_matrix_pools_heads_exactly():
    heatmap = pd.DataFrame(
        {
            "layer": 0,
            "head": [0, 1, 0, 1, 2],
            "delta_bin": [0, 0, 2, 2, 1],
            "distance_bin": [1, 1, 3, 3, 0],
            "bin_width": 256,
            "pp_sum": [3.0, 1.0, 0.5, 0.0, 7.0],
            "n_pairs": [4, 6, 2, 0, 0],
        }
    )
    matrix, delta_edges, distance_edges = pf.heatmap_matrix(heatmap)
    assert matrix.shape == (4, 3)
    assert delta_edges.tolist() == [0, 256, 512, 768] and distance_edges.tolist() == [0, 256, 512, 768, 1024]
    assert matrix[1, 0] == 4.0 / 10  # Σ pp_sum / Σ n_pairs, not the mean of the heads' means (0.5)
    assert matrix[3, 2] == 0.25  # a head without pairs adds nothing
    expected = np.full((4, 3), np.nan)
    expected[1, 0], expected[3, 2] = 0.4, 0.25
    np.testing.assert_array_equal(matrix, expected)  # every other cell NaN, never 0, incl. (0, 1) with 0 pairs
    padded, delta_edges, _ = pf.heatmap_matrix(heatmap, n_distance=6, n_delta=5)
    assert padded.shape == (6, 5) and len(delta_edges) == 6 and np.isnan(padded[4:]).all()
    with pytest.raises(ValueError, match="n_delta must be an integer >= 3"):
        pf.heatmap_matrix(heatmap, n_delta=2)


def test_heatmap_matrix_respects_the_feasible_region():
    matrix, delta_edges, distance_edges = pf.heatmap_matrix(_heatmap(width=512))
    i, j = np.indices(matrix.shape)
    infeasible = j >= 2 * (i + 1)  # the whole bin lies at D < Δ/2
    assert infeasible.any() and not np.isfinite(matrix[infeasible]).any()
    # Near the query (small D and Δ) every feasible cell has pairs.
    assert np.isfinite(matrix[:4, :4][~infeasible[:4, :4]]).all()
    assert np.nanmin(matrix) >= 0 and np.nanmax(matrix) <= 1
    # Row D ∈ [0, 512) admits Δ < 1024: Δ bins 0 and 1 only.
    assert np.isfinite(matrix[0, :2]).all() and not np.isfinite(matrix[0, 2:]).any()


def test_heatmap_figure_draws_nan_for_empty_cells(monkeypatch, tmp_path):
    heatmap = pd.DataFrame(
        {
            "delta_bin": [0, 1, 0],
            "distance_bin": [0, 2, 3],
            "bin_width": 8192,
            "pp_sum": [2.0, 1.0, 3.0],
            "n_pairs": [4, 2, 4],
        }
    )
    fig, (ax,) = _drawn(monkeypatch, lambda: pf.heatmap_figure(heatmap, tmp_path / "x.png"))
    drawn = ax.images[0].get_array()
    np.testing.assert_array_equal(np.ma.getdata(drawn), pf.heatmap_matrix(heatmap)[0])
    assert np.isnan(np.ma.getdata(drawn)[1, 0]) and np.ma.getmaskarray(drawn)[1, 0]
    assert ax.images[0].get_cmap().name == "magma"
    assert ax.images[0].get_extent() == [0, 16384, 0, 32768]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "8,192"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "8,192", "16,384", "24,576"]
    (boundary,) = ax.lines
    np.testing.assert_allclose(boundary.get_ydata(), np.asarray(boundary.get_xdata()) / 2)
    assert fig.axes[-1].get_ylabel() == "mean pairwise plasticity"


def test_heatmaps_comparison_shares_grid_and_scale(monkeypatch, tmp_path):
    series = _series(_heatmap)
    series = series[(series["checkpoint"] != "step-0") | (series["delta_bin"] < 3)]  # a smaller grid
    fig, axes = _drawn(monkeypatch, lambda: pf.heatmaps_comparison_figure(series, tmp_path / "x.png"))
    assert [ax.get_title() for ax in axes] == ["step-0", "step-100", "step-1000"]
    images = [ax.images[0] for ax in axes]
    assert len({im.get_array().shape for im in images}) == 1
    assert len({(im.norm.vmin, im.norm.vmax) for im in images}) == 1
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 1


def test_heatmap_colour_scale(monkeypatch, tmp_path):
    heatmap = _heatmap(width=512)
    _, (ax,) = _drawn(
        monkeypatch, lambda: pf.heatmap_figure(heatmap, tmp_path / "x.png", vmin=0, vmax=1, title="fixed")
    )
    assert (ax.images[0].norm.vmin, ax.images[0].norm.vmax) == (0, 1) and ax.get_title() == "fixed"
    _, (ax,) = _drawn(monkeypatch, lambda: pf.heatmap_figure(heatmap, tmp_path / "x.png"))
    matrix = pf.heatmap_matrix(heatmap)[0]
    assert (ax.images[0].norm.vmin, ax.images[0].norm.vmax) == (np.nanmin(matrix), np.nanmax(matrix))
    assert len(ax.get_xticklabels()) <= 16  # the starts of 16 bins, at most 16 ticks
    # A single value still gets a usable scale.
    _, (ax,) = _drawn(monkeypatch, lambda: pf.heatmap_figure(heatmap.iloc[:1], tmp_path / "x.png"))
    assert ax.images[0].norm.vmin < ax.images[0].norm.vmax


def test_heatmaps_comparison_wraps_at_four(monkeypatch, tmp_path):
    five = _series(_heatmap, order=("step-0", "step-100", "step-1000", "x", "y"))
    _, axes = _drawn(monkeypatch, lambda: pf.heatmaps_comparison_figure(five, tmp_path / "x.png"))
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in axes] == [(2, 4)] * 5
    assert [ax.get_title() for ax in axes] == ["step-0", "step-100", "step-1000", "x", "y"]  # NaN steps last


def test_profile_trend_colours(monkeypatch, tmp_path):
    tau = np.array([1000.0, 2000.0, 3000.0, 4000.0])
    slopes = {0: 2e-5, 1: -2e-5, 2: 1e-7}  # rising, falling, flat within the default threshold
    profile = pd.concat(
        [
            pd.DataFrame({"layer": 0, "head": h, "q_cell": range(1, 5), "tau": tau, "ap": 0.5 + s * tau})
            for h, s in slopes.items()
        ],
        ignore_index=True,
    )
    _, (ax,) = _drawn(monkeypatch, lambda: pf.profile_figure(profile, tmp_path / "x.png"))
    colours = [to_hex(line.get_color()) for line in ax.lines]
    assert colours[:3] == [to_hex("green"), to_hex("red"), to_hex("gray")]
    # The thick red head mean, per q_cell.
    np.testing.assert_allclose(ax.lines[3].get_ydata(), profile.groupby("q_cell")["ap"].mean())
    assert ax.lines[3].get_linewidth() == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "mean over heads",
        "rising (1)",
        "falling (1)",
        "flat (1)",
    ]
    # A threshold above every slope makes them all flat.
    _, (ax,) = _drawn(monkeypatch, lambda: pf.profile_figure(profile, tmp_path / "x.png", trend_threshold=1e-4))
    assert {to_hex(line.get_color()) for line in ax.lines[:3]} == {to_hex("gray")}


def test_profile_colour_by_layer(monkeypatch, tmp_path):
    fig, (ax,) = _drawn(monkeypatch, lambda: pf.profile_figure(_profile(), tmp_path / "x.png", color_by="layer"))
    assert fig.axes[-1].get_ylabel() == "layer"
    head_lines = ax.lines[: N_LAYERS * N_HEADS]
    assert len({to_hex(line.get_color()) for line in head_lines}) == N_LAYERS
    fig, (ax,) = _drawn(monkeypatch, lambda: pf.profile_figure(_profile(), tmp_path / "x.png", color_by="none"))
    assert len(fig.axes) == 1 and [t.get_text() for t in ax.get_legend().get_texts()] == ["mean over heads"]


def test_profiles_comparison_by_other_column(monkeypatch, tmp_path):
    models = pd.concat([_profile().assign(model="b"), _profile(seed=3).assign(model="a")], ignore_index=True)
    _, (ax,) = _drawn(monkeypatch, lambda: pf.profiles_comparison_figure(models, tmp_path / "x.png", by="model"))
    assert [line.get_label() for line in ax.lines] == ["b", "a"]  # first appearance
    mean = models[models["model"] == "b"].groupby("q_cell")[["context_fraction", "ap"]].mean()
    np.testing.assert_allclose(ax.lines[0].get_xdata(), mean["context_fraction"])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), mean["ap"])


def test_bucket_heatmap_masks_k_at_or_after_q(monkeypatch, tmp_path):
    cells = _cells()
    cells.loc[0, "ap"] = np.nan
    for agg in ("mean", "median"):
        _, (ax,) = _drawn(monkeypatch, lambda agg=agg: pf.bucket_heatmap_figure(cells, tmp_path / "x.png", agg=agg))
        grid = ax.images[0].get_array()
        q, k = np.indices(grid.shape)
        assert np.ma.getmaskarray(grid)[k >= q].all() and not np.ma.getmaskarray(grid)[k < q].any()
        expected = cells.groupby(["q_cell", "k_bucket"])["ap"].agg(agg)
        assert grid[3, 1] == pytest.approx(expected[(3, 1)])
        assert ax.images[0].get_cmap().name == "magma"


def test_bucket_heatmap_drops_rows_without_key_bucket(monkeypatch, tmp_path):
    cells = pd.concat([_cells(), _cells(thesis=True)], ignore_index=True)
    _, (ax,) = _drawn(monkeypatch, lambda: pf.bucket_heatmap_figure(cells, tmp_path / "b.png"))
    expected = _cells().groupby(["q_cell", "k_bucket"])["ap"].mean()
    assert ax.images[0].get_array()[3, 1] == pytest.approx(expected[(3, 1)])


def test_component_weights_mark_rotate_half(monkeypatch, tmp_path):
    components = _components()
    _, (ax,) = _drawn(monkeypatch, lambda: pf.component_weights_figure(components, tmp_path / "x.png"))
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, components.groupby("component")["component_weight"].mean())
    (half,) = [line for line in ax.lines if line.get_label() == f"d/2 = {D // 2}"]
    assert list(half.get_xdata()) == [D // 2 - 0.5] * 2
    (arrow, text) = ax.texts  # the ↔ arrow across the halves, and its label
    assert arrow.arrow_patch is not None and arrow.get_text() == ""
    means = components.groupby("component")["component_weight"].mean().to_numpy()
    r = np.corrcoef(means[: D // 2], means[D // 2 :])[0, 1]
    assert r > 0.9 and text.get_text() == f"rotate_half: j ↔ j + {D // 2} (same RoPE frequency); halves r = {r:.2f}"


def test_comparison_figures_order_checkpoints_by_step(monkeypatch, tmp_path):
    want = ["step-0", "step-100", "step-1000"]
    _, (ax,) = _drawn(monkeypatch, lambda: pf.profiles_comparison_figure(_series(_profile), tmp_path / "x.png"))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == want
    assert [line.get_label() for line in ax.lines] == want
    _, axes = _drawn(monkeypatch, lambda: pf.heatmaps_comparison_figure(_series(_heatmap), tmp_path / "x.png"))
    assert [ax.get_title() for ax in axes] == want
    _, (ax,) = _drawn(
        monkeypatch, lambda: pf.component_weights_figure(_series(_components), tmp_path / "x.png", by="checkpoint")
    )
    assert [line.get_label().split(" (")[0] for line in ax.lines[:3]] == want
    # Without steps: first appearance.
    unstepped = _series(_profile).drop(columns="step")
    _, (ax,) = _drawn(monkeypatch, lambda: pf.profiles_comparison_figure(unstepped, tmp_path / "x.png"))
    assert [line.get_label() for line in ax.lines] == list(OUT_OF_ORDER)


def test_score_correlation_title_gives_pearson_r(monkeypatch, tmp_path):
    report, scores = _report()
    _, (ax,) = _drawn(monkeypatch, lambda: pf.score_correlation_figure(report, scores, tmp_path / "x.png"))
    merged = report.merge(scores, on="checkpoint")
    r = stats.pearsonr(merged["score"], merged["ap_drop"]).statistic
    assert f"Pearson r = {r:.3f}" in ax.get_title() and "n = 5" in ax.get_title()
    assert sorted(t.get_text() for t in ax.texts) == sorted(report["checkpoint"])
    # A model missing from scores, or with a NaN score, is left out.
    partial = scores.iloc[1:].assign(score=lambda f: f["score"].where(f.index != 2))
    _, (ax,) = _drawn(monkeypatch, lambda: pf.score_correlation_figure(report, partial, tmp_path / "x.png"))
    assert "n = 3" in ax.get_title()
    renamed = scores.rename(columns={"score": "ruler"})
    _, (ax,) = _drawn(
        monkeypatch,
        lambda: pf.score_correlation_figure(
            report, renamed, tmp_path / "x.png", metric="ap_len_4", score_column="ruler", title="RULER"
        ),
    )
    assert ax.get_title().startswith("RULER\nPearson r = ")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("ruler", "ap_len_4")
    constant = scores.assign(score=1.0)
    _, (ax,) = _drawn(monkeypatch, lambda: pf.score_correlation_figure(report, constant, tmp_path / "x.png"))
    assert "r undefined" in ax.get_title()


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

CALLS = {
    "profile": (lambda f, p: pf.profile_figure(f, p), _profile, "profile", "tau"),
    "profiles_comparison": (
        lambda f, p: pf.profiles_comparison_figure(f, p),
        lambda: _series(_profile),
        "profile",
        "context_fraction",
    ),
    "heatmap": (lambda f, p: pf.heatmap_figure(f, p), _heatmap, "heatmap", "n_pairs"),
    "heatmap_matrix": (lambda f, p: pf.heatmap_matrix(f), _heatmap, "heatmap", "bin_width"),
    "heatmaps_comparison": (
        lambda f, p: pf.heatmaps_comparison_figure(f, p),
        lambda: _series(_heatmap),
        "heatmap",
        "checkpoint",
    ),
    "bucket_heatmap": (lambda f, p: pf.bucket_heatmap_figure(f, p), _cells, "cells", "k_bucket"),
    "component_weights": (
        lambda f, p: pf.component_weights_figure(f, p),
        _components,
        "components",
        "component_weight",
    ),
    "score_report": (
        lambda f, p: pf.score_correlation_figure(f, _report()[1], p),
        lambda: _report()[0],
        "report",
        "ap_drop",
    ),
    "score_scores": (
        lambda f, p: pf.score_correlation_figure(_report()[0], f, p),
        lambda: _report()[1],
        "scores",
        "score",
    ),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_missing_columns_raise(tmp_path, name):
    call, make, argument, column = CALLS[name]
    with pytest.raises(ValueError, match=f"{argument} has no column\\(s\\) \\['{column}'\\].*it has") as error:
        call(make().drop(columns=column), tmp_path / "x.png")
    assert isinstance(error.value, KeyError)  # as check_frame's elsewhere
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", list(CALLS))
def test_empty_frames_raise(tmp_path, name):
    call, make, argument, _ = CALLS[name]
    with pytest.raises(ValueError, match=f"{argument} is empty"):
        call(make().iloc[:0], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_unknown_options_raise(tmp_path):
    with pytest.raises(ValueError, match=r"color_by must be one of \['trend', 'layer', 'none'\], not 'depth'"):
        pf.profile_figure(_profile(), tmp_path / "x.png", color_by="depth")
    for bad in (-1.0, float("nan"), "big"):
        with pytest.raises(ValueError, match="trend_threshold must be a finite number >= 0"):
            pf.profile_figure(_profile(), tmp_path / "x.png", trend_threshold=bad)
    with pytest.raises(ValueError, match=r"agg must be one of \['mean', 'median'\], not 'max'"):
        pf.bucket_heatmap_figure(_cells(), tmp_path / "x.png", agg="max")
    with pytest.raises(ValueError, match=r"agg must be one of \['mean', 'median'\], not 'sum'"):
        pf.component_weights_figure(_components(), tmp_path / "x.png", agg="sum")
    with pytest.raises(ValueError, match=r"components has no column\(s\) \['checkpoint'\]"):
        pf.component_weights_figure(_components(), tmp_path / "x.png", by="checkpoint")
    with pytest.raises(ValueError, match=r"profile has no column\(s\) \['model'\]"):
        pf.profiles_comparison_figure(_series(_profile), tmp_path / "x.png", by="model")
    with pytest.raises(ValueError, match=r"vmin \(0.8\) must be below vmax \(0.2\)"):
        pf.heatmap_figure(_heatmap(), tmp_path / "x.png", vmin=0.8, vmax=0.2)
    with pytest.raises(ValueError, match=r"report has no column\(s\) \['ap_len_9'\]"):
        pf.score_correlation_figure(*_report(), tmp_path / "x.png", metric="ap_len_9")
    with pytest.raises(TypeError, match="DataFrame"):
        pf.heatmap_figure({"delta_bin": [0]}, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_bucket_heatmap_without_key_buckets_raises(tmp_path):
    with pytest.raises(ValueError, match="cells has no key buckets: k_bucket is NaN in every row"):
        pf.bucket_heatmap_figure(_cells(thesis=True), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_fewer_than_three_scores_raise(tmp_path):
    report, scores = _report()
    with pytest.raises(ValueError, match="scores matches 2 model\\(s\\) of report .* needs at least 3"):
        pf.score_correlation_figure(report, scores.iloc[:2], tmp_path / "x.png")
    renamed = scores.assign(checkpoint=["other"] * 4 + [scores["checkpoint"].iloc[4]])
    with pytest.raises(ValueError, match="scores has several rows for checkpoint\\(s\\) \\['other'\\]"):
        pf.score_correlation_figure(report, renamed, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_single_model_figures_refuse_several_checkpoints(tmp_path):
    for call, frame, argument in (
        (pf.profile_figure, _series(_profile), "profile"),
        (pf.heatmap_figure, _series(_heatmap), "heatmap"),
        (pf.bucket_heatmap_figure, _series(_cells), "cells"),
        (pf.component_weights_figure, _series(_components), "components"),
    ):
        with pytest.raises(ValueError, match=f"{argument} holds 3 checkpoints"):
            call(frame, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_bad_heatmap_bins_raise(tmp_path):
    with pytest.raises(ValueError, match=r"heatmap\['bin_width'\] must be one positive integer"):
        pf.heatmap_matrix(_heatmap().assign(bin_width=lambda f: np.where(f.index % 2, 512, 1024)))
    with pytest.raises(ValueError, match=r"heatmap\['delta_bin'\] must hold non-negative integers"):
        pf.heatmap_matrix(_heatmap().assign(delta_bin=lambda f: f["delta_bin"] - 1))
    with pytest.raises(ValueError, match=r"heatmap\['n_pairs'\] must hold finite counts"):
        pf.heatmap_matrix(_heatmap().assign(n_pairs=-1))
    with pytest.raises(ValueError, match=r"heatmap\['checkpoint'\] has missing labels"):
        pf.heatmaps_comparison_figure(_series(_heatmap).assign(checkpoint=None), tmp_path / "x.png")
