"""spectra.interventions.qk_asymmetry on synthetic sweep tables: identical curves read as generic
(shared logits), the seed's flat K curve (wrong KV head) reads as inf, exp3/exp3b rules, real-forward columns, bad
input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spectra.interventions.qk_asymmetry import asymmetry_table, interpret

ALPHAS = np.array([0.5, 0.75, 1.0, 1.25, 1.5])
SEED_HEADS = {(20, 19): "high", (14, 8): "medium", (0, 23): "low"}  # exp3b's locked heads


def make_sweep(q_curve, k_curve, heads=tuple(SEED_HEADS), n_samples=1, mode="propagated", effects=False):
    rows = []
    for layer, head in heads:
        for kind, f in (("q", q_curve), ("k", k_curve)):
            for a in ALPHAS:
                for s in range(n_samples):
                    row = {
                        "mode": mode,
                        "kind": kind,
                        "layer": layer,
                        "head": head,
                        "alpha": a,
                        "sample": s,
                        "entropy": f(a) + 0.1 * (s - (n_samples - 1) / 2),
                        "max_attn": 0.3,
                        "k_eff": 5.0,
                    }
                    if effects:
                        row.update(
                            kl_logits=0.0 if a == 1 else (0.02 if kind == "k" else 0.01) * (1 + s),
                            delta_loss=0.0 if a == 1 else (0.5 if kind == "k" else 0.25),
                            group_entropy_shift=0.0 if kind == "q" else -np.log(a),
                        )
                    rows.append(row)
    return pd.DataFrame(rows)


def steep(a):
    return 4 - 2 * np.log(a)


def test_identical_curves_are_generic():
    sweep = make_sweep(steep, steep, n_samples=3)
    table = asymmetry_table(sweep)
    assert table[["mode", "layer", "head"]].values.tolist() == [
        ["propagated", 0, 23],
        ["propagated", 14, 8],
        ["propagated", 20, 19],
    ]
    assert (table["asymmetry"] == 1.0).all() and table["is_symmetric"].all() and not table["is_q_dominant"].any()
    assert (table["interpretation"] == "generic softmax temperature").all()
    assert (table["max_abs_delta"] == 0).all() and table["slope_ratio"].to_numpy() == pytest.approx(1.0)
    assert table["q_range"].to_numpy() == pytest.approx(2 * np.log(3))
    assert table["q_slope"].to_numpy() == pytest.approx(-2.0) and table["role"].isna().all()
    with_roles = asymmetry_table(sweep, roles=SEED_HEADS)
    assert dict(zip(with_roles["role"], with_roles["interpretation"])) == {
        "high": "generic logit scaling",
        "medium": "generic",
        "low": "negative control passed",
    }


def test_flat_k_curve_is_the_b1_artifact():
    # exp3b's K curves were flat because KV head h % Hkv, not h // r, was scaled.
    table = asymmetry_table(make_sweep(steep, lambda a: 4.0), roles=SEED_HEADS)
    assert np.isposinf(table["asymmetry"]).all() and table["is_q_dominant"].all() and not table["is_symmetric"].any()
    assert (table["k_range"] == 0).all() and np.isposinf(table["slope_ratio"]).all()
    assert dict(zip(table["role"], table["interpretation"])) == {
        "high": "query-dominant control",
        "medium": "transitional",
        "low": "unexpected asymmetry",
    }
    assert (
        asymmetry_table(make_sweep(steep, lambda a: 4.0))["interpretation"] == "Q is the primary control signal"
    ).all()
    flat = asymmetry_table(make_sweep(lambda a: 4.0, lambda a: 4.0), roles=SEED_HEADS)
    assert flat["asymmetry"].isna().all() and not flat["is_symmetric"].any() and not flat["is_q_dominant"].any()
    assert (flat["interpretation"] == "no effect of either scale").all()


def test_ranges_slopes_and_exp3_bands():
    def half(a):
        return 4 - np.log(a)

    table = asymmetry_table(make_sweep(steep, half, heads=[(0, 0)]))
    row = table.iloc[0]
    assert row["asymmetry"] == pytest.approx(2.0) and row["interpretation"] == "Q is the primary control signal"
    assert row["q_slope"] == pytest.approx(stats.linregress(np.log(ALPHAS), steep(ALPHAS)).slope)
    assert row["k_slope"] == pytest.approx(-1.0) and row["slope_ratio"] == pytest.approx(2.0)
    assert row["max_abs_delta"] == pytest.approx(np.log(2))
    reverse = asymmetry_table(make_sweep(half, steep, heads=[(0, 0)])).iloc[0]
    assert reverse["asymmetry"] == pytest.approx(0.5) and reverse["interpretation"] == "K is the stronger control"
    assert interpret(1.2) == interpret(0.8) == "generic softmax temperature"
    assert interpret(1.21) == "Q is the primary control signal" and interpret(0.79) == "K is the stronger control"
    assert interpret(1.25, "medium") == "transitional" and interpret(1.15, "low") == "negative control passed"


def test_real_forward_columns_and_modes():
    sweep = pd.concat(
        [
            make_sweep(steep, steep, heads=[(3, 1)], n_samples=2, effects=True),
            make_sweep(steep, steep, heads=[(3, 1)], mode="local"),
        ]
    )
    table = asymmetry_table(sweep, roles={(3, 1): "high"})
    assert table["mode"].tolist() == ["local", "propagated"]
    prop = table.set_index("mode").loc["propagated"]
    assert prop["q_kl_logits"] == pytest.approx(0.015) and prop["k_kl_logits"] == pytest.approx(0.03)
    assert prop["q_delta_loss"] == pytest.approx(0.25) and prop["k_delta_loss"] == pytest.approx(0.5)
    assert prop["k_group_entropy_shift"] == pytest.approx(np.mean(np.abs(np.log(ALPHAS[ALPHAS != 1]))))
    assert "q_group_entropy_shift" not in table.columns
    assert table.set_index("mode").loc["local"][["q_kl_logits", "k_group_entropy_shift"]].isna().all()
    plain = asymmetry_table(make_sweep(steep, steep, heads=[(3, 1)]))
    assert not {"q_kl_logits", "k_delta_loss", "k_group_entropy_shift"} & set(plain.columns)
    no_mode = asymmetry_table(make_sweep(steep, steep, heads=[(3, 1)]).drop(columns="mode"))
    assert list(no_mode.columns[:2]) == ["layer", "head"]
    other = asymmetry_table(make_sweep(steep, steep, heads=[(3, 1)]).assign(max_attn=0.5), metric="max_attn")
    assert other["asymmetry"].isna().all()


def test_bad_input():
    sweep = make_sweep(steep, steep, heads=[(0, 0), (0, 1)])
    with pytest.raises(ValueError, match="q and k"):
        asymmetry_table(sweep[sweep["kind"] == "q"])
    with pytest.raises(ValueError, match="lack q or k rows"):
        asymmetry_table(sweep[~((sweep["kind"] == "k") & (sweep["head"] == 1))])
    with pytest.raises(ValueError, match="common alpha grid"):
        asymmetry_table(sweep[~((sweep["kind"] == "k") & (sweep["alpha"] == 1.5))])
    with pytest.raises(KeyError, match="kind"):
        asymmetry_table(sweep.drop(columns="kind"))
    with pytest.raises(KeyError, match="entropy_normalized"):
        asymmetry_table(sweep, metric="entropy_normalized")
    with pytest.raises(ValueError, match="roles"):
        asymmetry_table(sweep, roles={(0, 0): "extreme"})
    with pytest.raises(ValueError, match="alpha"):
        asymmetry_table(sweep.assign(alpha=sweep["alpha"] - 1.0))


_GRID = [0.5, 0.75, 1.0, 1.25, 1.5]


def _sweep_with_effects(k_curve_of, heads=((20, 19), (14, 8), (0, 23)), with_effects=False) -> pd.DataFrame:
    rows = []
    for layer, head in heads:
        for kind in ("q", "k"):
            for a in _GRID:
                e = 4 - 2 * math.log(a) if kind == "q" else k_curve_of(a)
                row = {
                    "mode": "propagated",
                    "kind": kind,
                    "layer": layer,
                    "head": head,
                    "alpha": a,
                    "sample": 0,
                    "entropy": e,
                    "max_attn": 0.3,
                    "k_eff": 5.0,
                }
                if with_effects:
                    row.update(
                        kl_logits=0.0 if a == 1 else 0.01 * (2 if kind == "k" else 1),
                        delta_loss=0.0,
                        group_entropy_shift=0.0 if kind == "q" else -math.log(a),
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def test_group_shift_is_the_mean_absolute_shift():
    table = asymmetry_table(_sweep_with_effects(lambda a: 4 - 2 * math.log(a), heads=((0, 0),), with_effects=True))
    row = table.iloc[0]
    assert row["q_kl_logits"] == pytest.approx(0.01) and row["k_kl_logits"] == pytest.approx(0.02)
    expected = np.mean([abs(math.log(a)) for a in _GRID if a != 1.0])
    assert row["k_group_entropy_shift"] == pytest.approx(expected)
