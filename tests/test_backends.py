"""Every public analysis, run end to end under ``spectra.backend("torch")``, gives the tables it gives
under ``spectra.backend("native")`` on the CPU, on the embedded tiny models.

Covered: ``spectra.profile`` (per-token table, ``head_summary``, ``layer_summary``; float32 and
bfloat16 models), the drained columns of ``spectra.Probe(row_stats=True)``, ``spectra.head_stats``,
``spectra.head_geometry``, ``scale_sweep`` (local and propagated), ``spectra.dynamics``
(``track_checkpoint`` and ``KeyTracker``), ``spectra.plasticity.pairwise`` and the plasticity
analysis (``plasticity.analyze``; it evaluates its key pairs inside ``spectra._core``, so the test
also holds its pairs' moments to ``plasticity.pairwise`` under each backend).

Each test also proves which implementation ran: the torch path's per-query-block function
(``spectra.ops.torch_path.attn_row_stats._block``) and the functions the dispatcher's ``.torch``
overloads call (``vec_stats`` and ``plasticity_pairwise`` of
``spectra.ops.torch_path.registration``) are wrapped by counting wrappers; the counts must be > 0
under ``"torch"`` and 0 under ``"native"``.

Equality rule (what "the same table" means):

* integer columns (ids, layer/head/token/position, ``argmax``, ``n_visible``, counts) and labels
  are equal;
* ``k_eff`` per token is equal except on rows inside the tie band: the float64 cumulative mass of
  the row's sorted weights at ``k_eff − 1`` (or ``k_eff``) lies within 1e-5 of the target
  ``θ − 1e-6``, where float32 logits summed in another order may put the running sum on the other
  side of the target. Such rows are rare, so every table is held to: at least 99.9 % of the rows
  equal, never more than one key apart; where the band can be computed (profile and Probe, from
  the model's eager attention weights in float64), every row outside it equal. A mean of k_eff
  over the n tokens of a group (a head, a sample) may differ by 1/n (one row of the group in the
  band); summaries of a per-token table whose k_eff rows are all equal have equal k_eff summaries;
* float columns are close with ``rtol=1e-5, atol=1e-6`` (``FLOAT32``): both implementations
  compute the logits in float32 from the same q and k, but sum the D = 32 products and the T
  exponentials in different orders (the kernel in a scalar loop, the torch path with BLAS and
  vectorised reductions). That rounding is a few float32 ulps (eps ≈ 1.2e-7) of the logits, so
  weights move by a few 1e-7 relative (rtol 1e-5 is ~80 ulps); the entropy ``ln Z − E[s − max]``
  is a difference of O(1) terms, so its error is absolute (≲ 5e-7 here) and ``atol=1e-6`` covers
  near-zero entropies and sink masses. The norms (``vec_stats``, float64 sums) get the same bound;
* float64 outputs of ``plasticity.pairwise`` are close to ``rtol=1e-9, atol=1e-12``: both sum in
  float64 in different orders (relative error ~1e-15 · d), and Φ's tail is computed by erfc in both.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch

import spectra
from spectra import plasticity
from spectra.data.windows import load_windows
from spectra.heads import dynamics
from spectra.interventions import scale_sweep
from spectra.metrics.profile import METRICS
from spectra.metrics.summaries import head_summary, layer_summary
from spectra.models import zoo
from spectra.ops.plasticity import plasticity_head

# The package re-exports the functions under the modules' names, so the modules are reached by import.
ARS = importlib.import_module("spectra.ops.torch_path.attn_row_stats")
REGISTRATION = importlib.import_module("spectra.ops.torch_path.registration")

FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}
FLOAT64 = {"rtol": 1e-9, "atol": 1e-12}
THRESHOLD = 0.9
#: Integer-valued metrics that profile stores as float32 columns: compared exactly.
INTEGER_METRICS = ("argmax", "n_visible")

# ---- counting the torch path ----


@pytest.fixture
def calls(monkeypatch) -> Counter:
    """Calls of the torch path per op, counted by wrappers around the functions it always goes through."""
    counts: Counter = Counter()

    def count(module, name: str, op: str) -> None:
        original = getattr(module, name)

        def counted(*args, **kwargs):
            counts[op] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    count(ARS, "_block", "attn_row_stats")
    count(REGISTRATION, "vec_stats", "vec_stats")
    count(REGISTRATION, "plasticity_pairwise", "plasticity_pairwise")
    return counts


def both(run: Callable[[], object], calls: Counter, *ops: str):
    """``run()`` under "native" (no torch-path call allowed) and under "torch" (each of ``ops`` called)."""
    calls.clear()
    with spectra.backend("native"):
        native = run()
    assert sum(calls.values()) == 0, f"the torch path ran under backend('native'): {dict(calls)}"
    with spectra.backend("torch"):
        torch_path = run()
    for op in ops:
        assert calls[op] > 0, f"backend('torch') never reached the torch path's {op}: {dict(calls)}"
    return native, torch_path


# ---- comparing tables ----


def assert_k_eff_equal(native, torch_path, name: str = "k_eff", in_band: np.ndarray | None = None) -> None:
    """Per-token k_eff: at least 99.9 % equal and never more than one key apart (the tie band); with
    ``in_band`` (the rows inside the band), also equal on every other row."""
    a, b = np.asarray(native, dtype=np.float64), np.asarray(torch_path, dtype=np.float64)
    assert (np.isnan(a) == np.isnan(b)).all(), name
    equal = (a == b) | (np.isnan(a) & np.isnan(b))
    assert equal.mean() >= 0.999, f"{name}: only {equal.mean():.5f} of the rows are equal"
    assert np.nanmax(np.abs(a - b), initial=0.0) <= 1.0, name
    if in_band is not None:
        outside = ~np.asarray(in_band, dtype=bool)
        assert equal[outside].all(), f"{name}: {int((~equal[outside]).sum())} rows outside the tie band differ"


def assert_same_columns(
    native, torch_path, *, k_eff: tuple[str, ...] = (), k_eff_means: dict[str, float] | None = None
):
    """Column by column: integers, booleans and labels equal; per-token ``k_eff`` columns by their rule,
    means of k_eff (``k_eff_means``: column -> 1/n, n the fewest tokens behind one mean) within that;
    floats by their dtype's rule."""
    k_eff_means = k_eff_means or {}
    assert list(native) == list(torch_path)
    for name in native:
        a, b = np.asarray(native[name]), np.asarray(torch_path[name])
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
        if name in k_eff:
            assert_k_eff_equal(a, b, name)
        elif a.dtype.kind not in "fc" or name in INTEGER_METRICS:
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            tol = FLOAT64 if a.dtype == np.float64 and name in ("m", "v", "p", "pp") else dict(FLOAT32)
            if name in k_eff_means:
                tol["atol"] = k_eff_means[name]
            np.testing.assert_allclose(b, a, equal_nan=True, err_msg=name, **tol)


def assert_same_frame(native: pd.DataFrame, torch_path: pd.DataFrame, **rules) -> None:
    assert native.shape == torch_path.shape
    pd.testing.assert_index_equal(native.index, torch_path.index)
    assert_same_columns({c: native[c] for c in native}, {c: torch_path[c] for c in torch_path}, **rules)


def k_eff_tie_band(model, input_ids, attention_mask, threshold: float = THRESHOLD, band: float = 1e-5) -> pd.MultiIndex:
    """(sample, layer, head, token) of the real rows inside the k_eff tie band: the float64 cumulative
    mass of the sorted weights at k_eff − 1 (or at k_eff) lies within ``band`` of θ − 1e-6. Computed
    from the model's own eager attention weights (no padding on the left, so token = index)."""
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            weights = model(input_ids, attention_mask=attention_mask, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(impl)
    target = threshold - 1e-6
    rows = []
    for layer, w in enumerate(weights):
        cumulative = w.double().sort(-1, descending=True).values.cumsum(-1)  # (B, H, T, T)
        below = (cumulative < target).sum(-1, keepdim=True)  # k_eff − 1
        last = cumulative.shape[-1] - 1
        before = torch.where(below > 0, cumulative.gather(-1, (below - 1).clamp(min=0)), 0.0)
        at = cumulative.gather(-1, below.clamp(max=last))
        near = (((before - target).abs() < band) | ((at - target).abs() < band)).squeeze(-1)
        near &= attention_mask.bool()[:, None, :]
        for sample, head, token in near.nonzero().tolist():
            rows.append((sample, layer, head, token))
    return pd.MultiIndex.from_tuples(rows, names=["sample", "layer", "head", "token"])


# ---- models and inputs ----


@pytest.fixture(scope="module")
def llama():
    model, tokenizer = zoo.load("tiny-llama")
    ids = load_windows(None, tokenizer, 48, 2)
    mask = torch.ones_like(ids)
    mask[1, -9:] = 0  # right padding on the second window: padding keys and rows without a table row
    return model, ids, mask


# ---- profile and Probe(row_stats=True) ----


def test_profile_per_token_table_and_head_summaries(llama, calls):
    model, ids, mask = llama

    def run():
        return spectra.profile(model, ids, mask, metrics=METRICS, ignore_first=2)

    native, torch_path = both(run, calls, "attn_row_stats", "vec_stats")
    assert len(native) == 4 * 8 * int(mask.sum())
    assert_same_frame(native, torch_path, k_eff=("k_eff",))
    rows = pd.MultiIndex.from_frame(native[["sample", "layer", "head", "token"]].astype(np.int64))
    in_band = rows.isin(k_eff_tie_band(model, ids, mask))
    assert in_band.mean() < 1e-3  # the band is rare: this checks the band, not the backends
    assert_k_eff_equal(native["k_eff"], torch_path["k_eff"], in_band=in_band)
    same_k_eff = native["k_eff"].equals(torch_path["k_eff"])
    for summary in (head_summary, layer_summary):
        a, b = summary(native), summary(torch_path)
        if not same_k_eff:  # a row in the tie band moved: its k_eff summaries were checked row by row above
            a, b = (f.drop(columns=[c for c in f if c.startswith("k_eff")]) for f in (a, b))
        assert_same_frame(a, b)


def test_probe_row_stats_drained_columns(llama, calls):
    """A head selection that is not whole KV groups, beside a q capture, with padding."""
    model, ids, mask = llama
    heads = {0: [1, 6], 2: [0, 1, 2, 3], 3: [7]}

    def run():
        probe = spectra.Probe(model, layers=[0, 2, 3], heads=heads, capture=("q",), row_stats=True, threshold=0.8)
        with probe, torch.no_grad():
            model(ids, attention_mask=mask)
        q = probe.captured(0, 6, "q").vectors
        return probe.drain_row_stats(), q

    (native, q_native), (torch_path, q_torch) = both(run, calls, "attn_row_stats", "vec_stats")
    assert torch.equal(q_native, q_torch)  # the capture beside the statistics is untouched
    assert sorted(native) == sorted(METRICS[:-2] + ("q_norm", "k_norm", "example_id", "layer", "head", "position"))
    assert len(native["head"]) == (2 + 4 + 1) * int(mask.sum())
    assert_same_columns(native, torch_path, k_eff=("k_eff",))
    rows = pd.MultiIndex.from_arrays(
        [native[c].astype(np.int64) for c in ("example_id", "layer", "head", "position")],
        names=["sample", "layer", "head", "token"],
    )
    in_band = rows.isin(k_eff_tie_band(model, ids, mask, threshold=0.8))
    assert_k_eff_equal(native["k_eff"], torch_path["k_eff"], in_band=in_band)


def test_profile_bf16(calls):
    """profile of a bfloat16 model under both backends, with the float32 bound and the per-token k_eff rule.

    A looser bound than float32's is not needed, and would only hide errors: q and k reach both
    implementations as the same bfloat16 tensors, and both widen them to float32 before anything
    else (the products of two 8-bit mantissas are even exact in float32), so the logits differ
    only by float32 summation order, as for a float32 model; the q/k norms are float64 sums of the
    same values. What bf16 changes is the model's activations (rounded to 8 bits of mantissa),
    identical under both backends. Measured here: entropy differs by at most ~5e-7, weights by
    ~3e-7, like the float32 model. The tie band of k_eff is not computed (eager bf16 weights are
    not the float32 weights the kernels see), so k_eff is held to the 99.9 % / one-key rule.
    """
    model, tokenizer = zoo.load("tiny-llama", dtype=torch.bfloat16)
    ids = load_windows(None, tokenizer, 32, 2)

    def run():
        return spectra.profile(model, ids, metrics=METRICS)

    native, torch_path = both(run, calls, "attn_row_stats", "vec_stats")
    assert len(native) == 4 * 8 * ids.numel()
    assert_same_frame(native, torch_path, k_eff=("k_eff",))


# ---- head statistics, geometry, dynamics ----


def test_head_stats(llama, calls):
    model, ids, _ = llama

    def run():
        return spectra.head_stats(model, ids, n_random=2, random_block=8)

    native, torch_path = both(run, calls, "attn_row_stats", "vec_stats")
    assert len(native) == 4 * 8
    tokens = len(ids) * (ids.shape[1] - 2)  # per head, after ignore_first = 2
    assert_same_frame(native, torch_path, k_eff_means={"k_eff_mean": 1 / tokens})


def test_head_geometry(llama, calls):
    model, ids, _ = llama

    def run():
        return spectra.head_geometry(model, [ids[:1], ids[1:]])

    native, torch_path = both(run, calls, "vec_stats")
    assert len(native) == 4 * 8 and (native["tokens"] == ids.numel()).all()
    assert_same_frame(native, torch_path)


@pytest.fixture(scope="module")
def qwen3_checkpoint():
    model, tokenizer = zoo.load("tiny-qwen3", checkpoint=100)
    return model, load_windows(None, tokenizer, 32, 2)


def test_dynamics_track_checkpoint(qwen3_checkpoint, calls):
    model, ids = qwen3_checkpoint

    def run():
        return dynamics.track_checkpoint(model, 100, ids, n_random=2, random_block=8)

    native, torch_path = both(run, calls, "attn_row_stats", "vec_stats")
    assert native.steps == torch_path.steps == [100]
    for name in ("head_series", "kv_series", "gamma", "taxonomy"):
        a, b = getattr(native, name), getattr(torch_path, name)
        assert len(a) > 0, name
        # head_series holds every statistic in one value column, k_eff_mean among them.
        k_eff = a["stat"].eq("k_eff_mean").to_numpy() if "stat" in a else np.zeros(len(a), dtype=bool)
        assert_same_frame(a[~k_eff].reset_index(drop=True), b[~k_eff].reset_index(drop=True))
        if k_eff.any():
            tokens = len(ids) * (ids.shape[1] - 2)  # per head, after ignore_first = 2
            np.testing.assert_allclose(b[k_eff]["value"], a[k_eff]["value"], rtol=0, atol=1 / tokens)


def test_dynamics_key_tracker(qwen3_checkpoint, calls):
    model, ids = qwen3_checkpoint

    def run():
        with dynamics.KeyTracker(model, every=2) as tracker, torch.no_grad():
            for _ in range(3):
                model(ids)
                tracker.step()
        return tracker.kv_series()

    native, torch_path = both(run, calls, "vec_stats")
    assert sorted(native["step"].unique().tolist()) == [0, 2]
    assert_same_frame(native, torch_path)


# ---- scale sweep ----


def test_scale_sweep_local(llama, calls):
    model, ids, mask = llama

    def run():
        return scale_sweep(model, ids, [(0, 1), (2, 5), (3, 0)], (0.5, 1.0, 2.0), kinds=("q", "k"), attention_mask=mask)

    native, torch_path = both(run, calls, "attn_row_stats")
    assert len(native) == 2 * 3 * 3 * 2
    assert_same_frame(native, torch_path, k_eff_means={"k_eff": 1 / native["n_tokens"].min()})


def test_scale_sweep_propagated(llama, calls):
    model, ids, mask = llama

    def run():
        return scale_sweep(model, ids, [(1, 3)], (0.5, 1.0), mode="propagated", attention_mask=mask)

    native, torch_path = both(run, calls, "attn_row_stats", "vec_stats")
    assert len(native) == 2 * 2
    assert_same_frame(native, torch_path, k_eff_means={"k_eff": 1 / native["n_tokens"].min()})


# ---- plasticity ----


def test_plasticity_pairwise(calls):
    """Diagonal and full covariances, shared and per-pair means, and the edge cases: v = 0 with
    m > 0, m < 0 and m = 0, and |z| large enough that 4p(1 − p) would round to 0."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    w[0] = 0.0  # v = 0, m = 0: a coin flip
    w[1] = 0.0
    w[1, 3] = 1.0  # only dimension 3 — its variance is 0 below: v = 0, m = ±
    w[2] = -w[1]
    mean = torch.randn(16, generator=gen, dtype=torch.float64)
    mean[3] = 2.0
    var = torch.rand(16, generator=gen, dtype=torch.float64) * 0.5
    var[3] = 0.0
    w[3] = 0.0
    w[3, 5], mean[5], var[5] = 1.0, 0.2, 1e-4  # z = 20: PP = 4Φ(−20)(1 − Φ(−20)) ≈ 1e-88, where 4p(1 − p) is 0
    a = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    full = a @ a.T / 16
    per_pair = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    cases = {
        "diagonal": (w, mean, var),
        "full": (w, mean, full),
        "per-pair mean": (w, per_pair, var),
        "float32 keys": (w.float(), mean.float(), var.float()),
    }
    for case, args in cases.items():
        native, torch_path = both(lambda args=args: plasticity.pairwise(*args), calls, "plasticity_pairwise")
        assert_same_columns(native._asdict(), torch_path._asdict())
        if case == "diagonal":
            assert native.v[:3].tolist() == [0.0, 0.0, 0.0]
            assert native.pp[:3].tolist() == torch_path.pp[:3].tolist() == [1.0, 0.0, 0.0]
            assert 0.0 < native.pp[3] < 1e-80


@pytest.fixture(scope="module")
def capture_folder(tmp_path_factory, llama):
    model, ids, _ = llama
    out = tmp_path_factory.mktemp("qk")
    with spectra.Probe(model, layers=[1], heads=[0, 5], out_dir=out), torch.no_grad():
        model(ids)
    return out


def test_plasticity_analysis(capture_folder, calls):
    """The analysis (``plasticity.analyze``) gives the same tables under both backends, and the
    moments of its key pairs are ``plasticity.pairwise`` of the pairs' key differences under the
    head's query model — under either backend."""
    native, torch_path = both(lambda: plasticity.analyze(capture_folder, bucket_size=16), calls)
    for name in ("heads", "cells", "heatmap", "components"):
        assert_same_frame(getattr(native, name), getattr(torch_path, name))
    assert len(native.heads) == 2

    # One head's pairs, recomputed from its query model with the pairwise op (thesis mode, diagonal).
    q = spectra.read_capture(capture_folder, 1, 5, "q")
    k = spectra.read_capture(capture_folder, 1, 1, "k")
    t_q, t_k = q.positions.numpy().astype(np.float64), k.positions.numpy().astype(np.float64)
    bucket = 16
    head = plasticity.analyze_head(
        q.vectors, t_q, k.vectors, t_k, k.example_ids.numpy(), bucket_size=bucket, keep_pairs=True, pairs_per_cell=32
    )
    fit = plasticity_head(
        q.vectors,
        torch.from_numpy(t_q),
        torch.from_numpy(t_q // bucket).long(),
        k.vectors,
        torch.from_numpy(t_k),
        torch.from_numpy(t_k // bucket).long(),
        k.example_ids,
        mode="thesis",
        pairs_per_cell=1,
        seed=0,
        lookback=0,
        bucket_size=bucket,
        grid_width=float(bucket),
        grid_midpoint=True,
        min_queries=2,
        full_covariance=False,
        noise_ks_dims=[0],
    )["model"]
    d = q.vectors.shape[1]
    rotation = torch.eye(d, dtype=torch.float64) - 2 * torch.outer(fit["householder"], fit["householder"])
    q_rot = (q.vectors.double() * fit["sign"]) @ rotation
    k_rot = (k.vectors.double() * fit["sign"]) @ rotation
    cell_of = torch.from_numpy(np.floor(t_q / bucket))
    pairs = head.pairs
    assert len(pairs) > 0
    for cell, part in pairs.groupby("cell"):
        members = q_rot[cell_of == float(part["q_cell"].iloc[0])]
        tau = float(part["tau"].iloc[0])
        mu = torch.cat([(fit["alpha_rot"][0] + fit["beta_rot"][0] * tau).reshape(1), members[:, 1:].mean(0)])
        var = torch.cat([fit["resid_var"][:1], members[:, 1:].var(0, correction=1)])
        first, second = (torch.tensor(part[c].to_numpy(), dtype=torch.long) for c in ("first", "second"))
        w = k_rot[first] - k_rot[second]
        native, torch_path = both(
            lambda w=w, mu=mu, var=var: plasticity.pairwise(w, mu, var), calls, "plasticity_pairwise"
        )
        assert_same_columns(native._asdict(), torch_path._asdict())
        for name in ("m", "v", "pp"):
            np.testing.assert_allclose(
                getattr(torch_path, name).numpy(),
                part[name].to_numpy(),
                rtol=1e-9,
                atol=1e-12,
                err_msg=f"cell {cell} {name}",
            )
