"""The native per-head QK geometry (spectra._core.combined_pca / planar_rotation) against its twin
in spectra.reference.qk_geometry, on synthetic "two clusters + drift" data and on keys and queries
captured from the embedded model."""

from __future__ import annotations

import pytest
import torch

import spectra
from spectra import _core
from spectra.ops.reference import qk_geometry as ref


def clusters_and_drift(n=2000, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tq = torch.arange(n, dtype=torch.float64) % 512
    tk = (7 * torch.arange(n, dtype=torch.float64)) % 512
    q = torch.randn(n, d, generator=gen, dtype=torch.float64)
    k = torch.randn(n, d, generator=gen, dtype=torch.float64)
    q[:, 0] += 20 + 0.02 * tq
    k[:, 0] -= 20
    q[:, 1] += 0.002 * tq
    k[:, 1] += 0.02 * tk
    return q, tq, k, tk


def captured(layer=2, head=5):
    from spectra.models import zoo

    model, tok = zoo.load("tiny-llama")
    ids = tok(zoo.heldout_text()[:6000], return_tensors="pt").input_ids[:, :512].view(4, 128)
    probe = spectra.Probe(model, layers=[layer], heads=[head], capture=("q", "k"))
    with torch.no_grad(), probe:
        model(ids)
    q, k = probe.captured(layer, head, "q"), probe.captured(layer, probe.kv_head(head), "k")
    return q.vectors, q.positions.double(), k.vectors, k.positions.double()


@pytest.mark.parametrize("data", ["synthetic", "captured"])
def test_combined_pca_matches_the_twin(data):
    q, tq, k, tk = clusters_and_drift() if data == "synthetic" else captured()
    got, want = _core.combined_pca(q, tq, k, tk, 6), ref.combined_pca(q, tq, k, tk, 6)
    torch.testing.assert_close(got["explained_variance"], want["explained_variance"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got["r_q"], want["r_q"], rtol=0, atol=1e-8)
    torch.testing.assert_close(got["r_k"], want["r_k"], rtol=0, atol=1e-8)
    torch.testing.assert_close(got["components"], want["components"], rtol=0, atol=1e-6)
    for key in ("p_q", "p_k", "fisher_pc0"):
        assert got[key] == pytest.approx(want[key], rel=1e-8), key


@pytest.mark.parametrize("axis_b", ["centroid", "eigen"])
@pytest.mark.parametrize("data", ["synthetic", "captured"])
def test_planar_rotation_matches_the_twin(data, axis_b):
    q, tq, k, tk = clusters_and_drift() if data == "synthetic" else captured()
    got, want = _core.planar_rotation(q, tq, k, tk, axis_b), ref.planar_rotation(q, tq, k, tk, axis_b)
    torch.testing.assert_close(got["a"], want["a"], rtol=0, atol=1e-10)
    torch.testing.assert_close(got["b"], want["b"], rtol=0, atol=1e-6)
    for key, value in want.items():
        if key not in ("a", "b"):
            assert got[key] == pytest.approx(value, rel=1e-7, abs=1e-10), key
    assert got["residual_pos_r"] < 1e-10  # analytically 0 (7.3e-15 reported for the published run)


def test_the_pc0_confound():
    # PCA's PC0 (the Q/K separation axis) says queries track position more than keys; the drift axis
    # a shows keys drift faster.
    q, tq, k, tk = clusters_and_drift()
    pca, rot = _core.combined_pca(q, tq, k, tk, 10), _core.planar_rotation(q, tq, k, tk)
    assert pca["r_q"][0] > abs(pca["r_k"][0])
    assert abs(rot["r_k_a"]) > abs(rot["r_q_a"])


def test_bias_strength_is_invariant_under_flipping_a():
    q, tq, k, tk = clusters_and_drift(500, 8, seed=2)
    rot = _core.planar_rotation(q, tq, k, tk)
    a = -rot["a"]
    mu_q_a = float((q @ a).mean())
    tc = tk - tk.mean()
    alpha_k = float((tc * ((k @ a) - (k @ a).mean())).sum() / (tc * tc).sum())
    assert mu_q_a * alpha_k == pytest.approx(rot["bias_strength"], rel=1e-12)


def test_bad_input():
    q = torch.randn(10, 4)
    with pytest.raises(ValueError, match="same head_dim"):
        _core.planar_rotation(q, torch.arange(10.0), torch.randn(10, 5), torch.arange(10.0))
    with pytest.raises(ValueError, match="one entry per row"):
        _core.combined_pca(q, torch.arange(9.0), q, torch.arange(10.0))
    with pytest.raises(ValueError, match="axis_b"):
        _core.planar_rotation(q, torch.arange(10.0), q, torch.arange(10.0), "random")
    with pytest.raises(ValueError, match="rows, head_dim"):
        _core.combined_pca(torch.randn(10), torch.arange(10.0), q, torch.arange(10.0))
    const = _core.planar_rotation(q, torch.zeros(10), q, torch.zeros(10))
    assert const["drift_norm"] == 0.0 and const["bias_strength"] != const["bias_strength"]  # NaN


def test_one_pass_equals_the_two_analyses():
    q, tq, k, tk = clusters_and_drift(800, 8, seed=4)
    pca, rot = _core.qk_geometry(q, tq, k, tk, 5, "eigen")
    alone_pca, alone_rot = _core.combined_pca(q, tq, k, tk, 5), _core.planar_rotation(q, tq, k, tk, "eigen")
    assert torch.equal(pca["r_q"], alone_pca["r_q"]) and torch.equal(pca["components"], alone_pca["components"])
    assert all(torch.equal(torch.as_tensor(rot[key]), torch.as_tensor(alone_rot[key])) for key in rot)


# ---- spectra.geometry ----


def test_pc0_taxonomy_boundaries_are_strict():
    from spectra.geometry import pc0_class

    grid = {
        (0.71, 0.71): "position-dominated",
        (0.7, 0.71): "mixed",
        (0.71, -0.29): "Q-positional",
        (0.71, 0.3): "mixed",
        (0.29, -0.71): "K-positional",
        (0.3, 0.71): "mixed",
        (0.29, 0.29): "content-focused",
        (0.29, 0.3): "mixed",
        (0.5, 0.5): "mixed",
    }
    for (r_q, r_k), label in grid.items():
        assert pc0_class(r_q, r_k) == label, (r_q, r_k)
    assert pc0_class(0.6, 0.6, hi=0.5, lo=0.2) == "position-dominated"
    with pytest.raises(ValueError, match="lo/hi"):
        pc0_class(0.5, 0.5, hi=0.2, lo=0.3)


def test_geometry_api_and_head_table():
    from spectra import geometry

    q, tq, k, tk = clusters_and_drift(600, 8, seed=6)
    table = geometry.combined_pca(q, k, tq, tk, n_components=4)
    assert len(table) == 4 and (table["r_q"] >= -1).all() and table.attrs["fisher_pc0"] > 0
    rot = geometry.rotation(q, k, tq, tk, axis_b="eigen")
    assert rot["residual_pos_r"] < 1e-10
    with pytest.raises(ValueError, match="axis_b"):
        geometry.rotation(q, k, tq, tk, axis_b="random")
    with pytest.raises(ValueError, match="n_components"):
        geometry.combined_pca(q, k, tq, tk, n_components=0)
    bad = q.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="q: holds NaN"):
        geometry.combined_pca(bad, k, tq, tk)
    from spectra.models.random_init import VOCAB_SIZE, tiny_model

    model = tiny_model("qwen3", "sdpa")
    probe = spectra.Probe(model, capture=("q", "k"))
    with torch.no_grad(), probe:
        model(torch.randint(3, VOCAB_SIZE, (2, 40)))
    heads = geometry.head_table(probe)
    assert len(heads) == 2 * 4 and set(heads["pc0_class"]) <= set(geometry.PC0_CLASSES)
    assert (heads["residual_pos_r"] < 1e-8).all() and (heads["n_q"] == 80).all()
    only_q = spectra.Probe(model, capture="q")
    with pytest.raises(ValueError, match="needs capture"):
        geometry.head_table(only_q)


def test_geometry_cli_on_a_capture_of_the_embedded_model(tmp_path):
    import json

    import pandas as pd
    from click.testing import CliRunner

    from spectra.cli import main
    from spectra.models import zoo

    model, tok = zoo.load("tiny-qwen3")
    ids = tok(zoo.heldout_text()[:6000], return_tensors="pt").input_ids[:, :256].view(2, 128)
    with spectra.Probe(model, layers=[0, 3], heads=[0, 5], out_dir=tmp_path / "qk"), torch.no_grad():
        model(ids)
    result = CliRunner().invoke(
        main,
        ["geometry", "--qk", str(tmp_path / "qk"), "--out", str(tmp_path / "g"), "--per-kind", "--scatter-head", "3,5"],
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "g"
    heads = pd.read_csv(out / "heads.csv")
    assert sorted(zip(heads["layer"], heads["head"])) == [(0, 0), (0, 5), (3, 0), (3, 5)]
    assert (heads["kv_head"] == heads["head"] // 4).all() and heads["uses_rope"].all()
    assert len(pd.read_csv(out / "qk.csv")) == 4 * 10
    planes = pd.read_csv(out / "planes.csv")
    assert len(planes) == 4 * 15  # head_dim 32: 30 complement directions, 15 planes
    correlations = pd.read_csv(out / "correlations.csv")  # the published per-kind layout: 4 q and 4 k files
    assert list(correlations.columns) == [
        "checkpoint",
        "step",
        "layer",
        "head",
        "kind",
        "pca_dim",
        "correlation",
        "p_value",
        "explained_variance_ratio",
    ]
    assert len(correlations) == (4 + 4) * 10
    summary = json.loads((out / "summary.json").read_text())["final"]
    assert summary["n_heads"] == 4 and summary["max_residual_pos_r"] < 1e-8
    assert abs(sum(summary["pc0_class_share"].values()) - 1) < 1e-12
    meta = json.loads((out / "meta.json").read_text())
    assert meta["options"]["per_kind"] is True and meta["inputs"][0]["family"] == "qwen3"
    for figure in ("pc0_rq_rk.png", "explained_variance.png", "depth_heatmaps.png", "pc_scatter_l03h05.png"):
        assert (out / "figures" / figure).stat().st_size > 0
    assert not (out / "series.csv").exists()  # one capture: no series
    empty = CliRunner().invoke(main, ["geometry", "--qk", str(tmp_path), "--out", str(tmp_path / "x")])
    assert empty.exit_code != 0 and "no query captures" in empty.output
    both = CliRunner().invoke(main, ["geometry", "--qk", str(tmp_path / "qk"), "--model", "tiny-qwen3", "--out", "x"])
    assert both.exit_code != 0 and "either --qk" in both.output
    bad_head = CliRunner().invoke(
        main, ["geometry", "--qk", str(tmp_path / "qk"), "--out", str(tmp_path / "y"), "--scatter-head", "1,2"]
    )
    assert bad_head.exit_code != 0 and "layer 1 head 2 is not among" in bad_head.output


def test_geometry_cli_over_the_embedded_checkpoints(tmp_path):
    import json

    import pandas as pd
    from click.testing import CliRunner

    from spectra.cli import main

    args = [
        "geometry",
        "--model",
        "tiny-qwen3",
        "--checkpoints",
        "--n-examples",
        "2",
        "--max-length",
        "128",
        "--out",
        str(tmp_path / "g"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "g"
    series = pd.read_csv(out / "series.csv")
    assert series["step"].tolist() == [0, 100, 200, 400, 800, 1600] and (series["n_heads"] == 32).all()
    heads = pd.read_csv(out / "heads.csv")
    assert len(heads) == 6 * 32 and heads.groupby("checkpoint")["step"].nunique().eq(1).all()
    # The bias decomposition columns are the per-checkpoint means of the head table.
    last = heads[heads["step"] == 1600]
    assert series["mean_bias_strength"].iloc[-1] == pytest.approx(last["bias_strength"].mean(), rel=1e-9)
    assert series["mean_mu_q_a"].iloc[-1] == pytest.approx(last["mu_q_a"].mean(), rel=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["checkpoint"] == "step-001600" and len(summary["series"]) == 6
    for figure in ("bias_decomposition.png", "class_shares.png", "depth_bias_strength.png"):
        assert (out / "figures" / figure).stat().st_size > 0
    captured = sorted(p.name for p in (out / "qk").iterdir())
    assert captured[0] == "step-000000" and len(captured) == 6
    # A rerun reuses the finished captures and gives the same tables.
    stamp = (out / "qk" / "step-000000" / "spectra_capture.json").stat().st_mtime_ns
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert (out / "qk" / "step-000000" / "spectra_capture.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_csv(out / "heads.csv"), heads)
