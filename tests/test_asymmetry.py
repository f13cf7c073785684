"""Q-vs-K asymmetry (spec M12, exp3, exp3b): identical curves read as generic; the seed's flat K
curve (bug B1) reads as inf; side-effect columns come through; bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from spectra.experiments.qk_asymmetry import asymmetry_table, interpret

ALPHAS = [0.5, 0.75, 1.0, 1.25, 1.5]


def sweep_for(k_curve_of, heads=((20, 19), (14, 8), (0, 23)), with_effects=False) -> pd.DataFrame:
    rows = []
    for layer, head in heads:
        for kind in ("q", "k"):
            for a in ALPHAS:
                e = 4 - 2 * math.log(a) if kind == "q" else k_curve_of(a)
                row = {"mode": "propagated", "kind": kind, "layer": layer, "head": head, "alpha": a, "sample": 0,
                       "entropy": e, "max_attn": 0.3, "k_eff": 5.0}
                if with_effects:
                    row.update(kl_logits=0.0 if a == 1 else 0.01 * (2 if kind == "k" else 1), delta_loss=0.0,
                               group_entropy_shift=0.0 if kind == "q" else -math.log(a))
                rows.append(row)
    return pd.DataFrame(rows)


def test_identical_curves_are_generic():
    table = asymmetry_table(sweep_for(lambda a: 4 - 2 * math.log(a)), roles={(20, 19): "high", (14, 8): "medium",
                                                                             (0, 23): "low"})
    assert (table["asymmetry"] == 1.0).all() and table["is_symmetric"].all() and not table["is_q_dominant"].any()
    assert dict(zip(table["role"], table["interpretation"])) == {
        "high": "generic logit scaling", "medium": "generic", "low": "negative control passed"}
    assert (table["max_abs_delta"] == 0).all()
    assert table["slope_ratio"].to_numpy() == pytest.approx(1.0)


def test_a_flat_k_curve_is_the_seed_artifact():
    # exp3b's committed K curves were flat because the wrong KV head was scaled (h % Hkv).
    table = asymmetry_table(sweep_for(lambda a: 4.0), roles={(20, 19): "high", (14, 8): "medium", (0, 23): "low"})
    assert np.isinf(table["asymmetry"]).all() and table["is_q_dominant"].all()
    assert dict(zip(table["role"], table["interpretation"])) == {
        "high": "query-dominant control", "medium": "transitional", "low": "unexpected asymmetry"}


def test_without_roles_the_exp3_rule_applies():
    assert interpret(1.5) == "Q is the primary control signal"
    assert interpret(0.5) == "K is the stronger control"
    assert interpret(1.1) == "generic softmax temperature"
    table = asymmetry_table(sweep_for(lambda a: 4 - 1.0 * math.log(a), heads=((0, 0),)))
    assert table.loc[0, "asymmetry"] == pytest.approx(2.0) and table.loc[0, "interpretation"].startswith("Q is")


def test_side_effect_columns():
    table = asymmetry_table(sweep_for(lambda a: 4 - 2 * math.log(a), heads=((0, 0),), with_effects=True))
    row = table.iloc[0]
    assert row["q_kl_logits"] == pytest.approx(0.01) and row["k_kl_logits"] == pytest.approx(0.02)
    expected = np.mean([abs(math.log(a)) for a in ALPHAS if a != 1.0])
    assert row["k_group_entropy_shift"] == pytest.approx(expected)


def test_bad_input():
    only_q = sweep_for(lambda a: 1.0, heads=((0, 0),))
    with pytest.raises(ValueError, match="q and k"):
        asymmetry_table(only_q[only_q["kind"] == "q"])
    with pytest.raises(KeyError, match="kind"):
        asymmetry_table(only_q.drop(columns="kind"))
    with pytest.raises(ValueError, match="roles"):
        interpret(1.0, "extreme")
