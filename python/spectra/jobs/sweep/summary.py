"""The summary.json pieces of a sweep and the lines ``spectra sweep`` prints."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spectra.interventions import gain as gain_mod
from spectra.jobs.sweep.config import SweepResult

__all__ = ["print_sweep_result"]


def _records(frame: pd.DataFrame, columns: list[str], limit: int) -> list[dict[str, Any]]:
    present = [c for c in columns if c in frame.columns]
    return frame[present].head(limit).replace({np.inf: "inf", -np.inf: "-inf"}).to_dict("records")


def _gain_map_summary(gains: pd.DataFrame, selected: pd.DataFrame, by: str) -> dict[str, Any]:
    column = f"gain_{by}"
    counts = gains["category"].value_counts()
    per_layer = gains.groupby("layer")[column].mean()
    return {
        "gain_by": by,
        "categories": {c: int(counts.get(c, 0)) for c in ("high", "medium", "low")},
        "p_low": float(gains["p_low"].iloc[0]),
        "p_high": float(gains["p_high"].iloc[0]),
        "gain_mean": float(gains[column].mean()),
        "gain_min": _head_value(gains, gains[column].idxmin(), column),
        "gain_max": _head_value(gains, gains[column].idxmax(), column),
        "r_squared_mean": float(gains[f"r_squared_{by}"].mean()),
        "monotonic_fraction": {
            m: float(gains[f"monotonic_{m}"].mean()) for m in ("entropy", "max_attn") if f"monotonic_{m}" in gains
        },
        "layer_mean_gain": {int(k): float(v) for k, v in per_layer.items()},
        "selected_heads": selected[["role", "layer", "head", column]].to_dict("records"),
    }


def _head_value(frame: pd.DataFrame, index, column: str) -> dict[str, Any]:
    row = frame.loc[index]
    return {"layer": int(row["layer"]), "head": int(row["head"]), column: float(row[column])}


def _control_summary(gains: pd.DataFrame, targets, control: tuple[int, int], by: str) -> dict[str, Any]:
    column = f"gain_{by}"
    first = gains.drop_duplicates(["layer", "head"]).set_index(["layer", "head"])[column]
    target = next(t for t in targets if t != control)
    ratio = float(first[target] / first[control]) if first[control] != 0 else float("inf")
    return {
        "target": list(target),
        "control": list(control),
        "gain_ratio": ratio,
        "gain_ratio_verdict": gain_mod.gain_ratio_verdict(float(first[target]), float(first[control])),
    }


def print_sweep_result(result: SweepResult) -> None:
    """What the CLI prints: where the files are and the experiment's headline numbers."""
    s = result.summary
    print(
        f"spectra sweep: {s['experiment']} on {s['model']} ({s['n_samples']} samples x {s['context_length']} tokens, "
        f"alphas {s['alphas']}) -> {result.out_dir}"
    )
    if "categories" in s:
        c = s["categories"]
        print(
            f"gain map ({s['gain_by']}): {c['high']} high / {c['medium']} medium / {c['low']} low "
            f"(p10 {s['p_low']:.4g}, p90 {s['p_high']:.4g}); mean R^2 {s['r_squared_mean']:.3f}"
        )
        column = f"gain_{s['gain_by']}"
        for row in s["selected_heads"]:
            print(f"  {row['role']:>6}: L{row['layer']}H{row['head']}  gain {row[column]:.4g}")
    if s["experiment"] == "scale_sweep":
        by = "max_attn"
        for row in s.get("gains", [])[:8]:
            column = next((c for c in row if c.startswith("gain_")), None)
            if column is None:
                continue
            by = column.removeprefix("gain_")
            ci = (row.get(f"ci_low_{by}"), row.get(f"ci_high_{by}"))
            ci_text = f" [{ci[0]:.4g}, {ci[1]:.4g}]" if None not in ci else ""
            print(
                f"  [{row.get('mode', '')}/{row.get('kind', '')}] L{row['layer']}H{row['head']} gain_{by} "
                f"{row[column]:.4g}{ci_text}  R^2 {row.get(f'r_squared_{by}', float('nan')):.3f}"
            )
    if "gain_ratio_verdict" in s:
        print(f"target/control gain ratio {s['gain_ratio']:.3f}: {s['gain_ratio_verdict']}")
    for row in s.get("asymmetry", [])[:12]:
        role = f"{row['role']}: " if row.get("role") else ""
        asym = row["asymmetry"]
        asym = f"{asym:.4f}" if isinstance(asym, float) else str(asym)
        mode = f"[{row['mode']}] " if row.get("mode") else ""
        print(
            f"  {mode}{role}L{row['layer']}H{row['head']} q_range {row['q_range']:.4g} k_range {row['k_range']:.4g} "
            f"asymmetry {asym} -> {row.get('interpretation', '')}"
        )
        if row.get("k_group_entropy_shift") is not None:
            print(
                f"      K scaling also moves the rest of its GQA group's mean entropy by {row['k_group_entropy_shift']:.4g} "
                f"nats (mean |shift|); "
                f"logit KL q {row.get('q_kl_logits', float('nan')):.4g} vs k {row.get('k_kl_logits', float('nan')):.4g}"
            )
    if result.computed_shards:
        print(f"computed {len(result.computed_shards)} shard(s)")
    for path in result.figures:
        print(f"figure: {path}")
