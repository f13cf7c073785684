"""The native HookRegistry and PositionSampler on hand-made tensors (no model)."""

import subprocess
import sys

import pytest
import torch

import spectra


def registry(sampler=None, layers=2, heads=4, kv=2, dim=8):
    return spectra.HookRegistry(layers, heads, kv, dim, sampler or spectra.PositionSampler("all"))


def batch(reg, b=2, t=6, example_ids=(0, 1), valid=None):
    positions = torch.arange(t).expand(b, t)
    reg.begin_batch(
        torch.tensor(example_ids), positions, torch.ones(b, t, dtype=torch.bool) if valid is None else valid
    )


def qkv(b=2, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, 4, t, 8, generator=g),
        torch.randn(b, 2, t, 8, generator=g),
        torch.randn(b, 2, t, 8, generator=g),
    )


def test_captures_heads_rows_and_metadata():
    reg = registry()
    reg.add_capture(1, "q", "post_rope", [3, 1])
    reg.add_capture(1, "k", "post_rope", [1])
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    batch(reg, valid=valid, example_ids=(5, 9))
    q, k, v = qkv()
    out = reg.on_attention(1, q, k, v, 0.35)
    assert all(a is b or torch.equal(a, b) for a, b in zip(out, (q, k, v)))
    reg.end_batch()
    vectors, positions, example_ids, buckets = reg.captured(1, 3, "q", "post_rope")
    assert positions.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert example_ids.tolist() == [5] * 6 + [9] * 4
    assert vectors.dtype == torch.float32
    torch.testing.assert_close(vectors, torch.cat([q[0, 3], q[1, 3, :4]]), rtol=0, atol=0)
    kv_vectors = reg.captured(1, 1, "k", "post_rope")[0]
    assert torch.equal(kv_vectors, torch.cat([k[0, 1], k[1, 1, :4]]))
    assert [c.heads for c in reg.captures()] == [[1, 3], [1]]


def test_keys_with_a_cache_take_the_last_rows():
    reg = registry()
    reg.add_capture(0, "k", "post_rope", [0])
    batch(reg, b=1, t=3, example_ids=(0,))
    k = torch.randn(1, 2, 7, 8)  # 4 cached tokens + 3 new ones
    reg.on_attention(0, torch.randn(1, 4, 3, 8), k, torch.randn(1, 2, 7, 8), None)
    reg.end_batch()
    assert torch.equal(reg.captured(0, 0, "k", "post_rope")[0], k[0, 0, 4:])


def test_pre_rope_stage_and_several_actions_per_layer():
    reg = registry()
    reg.add_capture(0, "q", "pre_rope", [0])
    reg.add_capture(0, "q", "post_rope", [0])
    assert reg.wants_stage(0, "q", "pre_rope") and not reg.wants_stage(0, "k", "pre_rope")
    assert not reg.wants_stage(1, "q", "pre_rope")
    batch(reg)
    pre, (q, k, v) = torch.randn(2, 4, 6, 8), qkv()
    reg.on_stage(0, "q", "pre_rope", pre)
    reg.on_attention(0, q, k, v, None)
    reg.end_batch()
    assert torch.equal(reg.captured(0, 0, "q", "pre_rope")[0], pre[:, 0].reshape(-1, 8))
    assert torch.equal(reg.captured(0, 0, "q", "post_rope")[0], q[:, 0].reshape(-1, 8))
    with pytest.raises(ValueError, match="already captured"):
        reg.add_capture(0, "q", "pre_rope", [1])


def test_drain_and_discard():
    reg = registry()
    capture = reg.add_capture(0, "v", "post_rope", [1], keep_in_memory=False)
    for seed, discard in ((0, False), (1, True), (2, False)):
        batch(reg, b=1, t=4, example_ids=(seed,))
        q, k, v = qkv(b=1, t=4, seed=seed)
        reg.on_attention(0, q, k, v, None)
        reg.end_batch(discard=discard)
        if seed == 0:
            vectors, positions, examples, _ = capture.drain()
            assert vectors.shape == (4, 1, 8) and examples.tolist() == [0] * 4
            assert capture.drain()[0].shape == (0, 1, 8)
    vectors, _, examples, _ = capture.drain()
    assert examples.tolist() == [2] * 4 and capture.rows == 8
    with pytest.raises(RuntimeError, match="keep_in_memory"):
        reg.captured(0, 1, "v", "post_rope")


def test_sample_mask_is_per_layer_and_kind_and_seeded():
    reg = registry(spectra.PositionSampler("uniform", bucket_size=4))
    ex, pos, ok = torch.tensor([3]), torch.arange(400)[None], torch.ones(1, 400, dtype=torch.bool)
    a = reg.sample_mask(0, "q", ex, pos, ok)
    assert torch.equal(a, reg.sample_mask(0, "q", ex, pos, ok))
    assert not torch.equal(a, reg.sample_mask(1, "q", ex, pos, ok))
    assert not torch.equal(a, reg.sample_mask(0, "k", ex, pos, ok))
    assert 60 < int(a.sum()) < 140  # ~ Binomial(400, 1/4)
    other = registry(spectra.PositionSampler("uniform", bucket_size=4, seed=9))
    assert not torch.equal(a, other.sample_mask(0, "q", ex, pos, ok))
    ok[0, ::2] = False
    assert not (reg.sample_mask(0, "q", ex, pos, ok) & ~ok).any()


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"n_heads \(6\) must be a positive multiple of n_kv_heads \(4\)"):
        spectra.HookRegistry(1, 6, 4, 8, spectra.PositionSampler("all"))
    reg = registry()
    with pytest.raises(ValueError, match=r"layer: 2 is not a layer of this model; allowed layers are 0\.\.1"):
        reg.add_capture(2, "q", "post_rope", [0])
    with pytest.raises(ValueError, match=r"heads: 2 is not a KV head; allowed k heads are 0\.\.1"):
        reg.add_capture(0, "k", "post_rope", [2])
    with pytest.raises(ValueError, match="kind: unknown kind 'o'"):
        reg.add_capture(0, "o", "post_rope", [0])
    with pytest.raises(ValueError, match="stage: unknown stage 'mid'"):
        reg.add_capture(0, "q", "mid", [0])
    reg.add_capture(0, "q", "post_rope", [0])
    with pytest.raises(RuntimeError, match="outside a model forward"):
        reg.on_attention(0, *qkv(), None)
    batch(reg)
    with pytest.raises(ValueError, match=r"has shape \[2, 3, 6, 8\]; expected \(2, 4, >=6, head_dim\)"):
        reg.on_attention(0, torch.randn(2, 3, 6, 8), *qkv()[1:], None)
    with pytest.raises(ValueError, match="position_ids must be >= 0"):
        reg.begin_batch(torch.tensor([0]), torch.tensor([[-1, 0]]), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="PositionSampler: positions must be >= 0"):
        spectra.PositionSampler("explicit", positions=[-2])
    with pytest.raises(TypeError):
        spectra.PositionSampler("uniform", seed=-1)


# ---- intervention actions ----


def _registry():
    reg = spectra.HookRegistry(2, 4, 2, 8, spectra.PositionSampler("all"))
    reg.begin_batch(torch.tensor([0, 1]), torch.arange(5).expand(2, 5), torch.tensor([[1] * 5, [1, 1, 1, 0, 0]]).bool())
    return reg


def test_scale_actions_copy_and_scale_only_their_heads():
    reg = _registry()
    q_action = reg.add_scale(0, "q", [1, 3], 2.0)
    k_action = reg.add_scale(0, "k", [1], 0.5)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    q_before, k_before = q.clone(), k.clone()
    q2, k2, v2 = reg.on_attention(0, q, k, v, None)
    assert torch.equal(q, q_before) and torch.equal(k, k_before)  # inputs untouched (a KV cache may hold them)
    assert torch.equal(q2[:, [0, 2]], q[:, [0, 2]]) and torch.equal(q2[:, [1, 3]], q[:, [1, 3]] * 2)
    assert torch.equal(k2[:, 0], k[:, 0]) and torch.equal(k2[:, 1], k[:, 1] * 0.5) and v2 is not None
    assert torch.equal(v2, v)
    assert (q_action.applied, k_action.applied, q_action.applied_this_batch) == (1, 1, 1)
    q3, _, _ = reg.on_attention(1, q, k, v, None)  # another layer: nothing to do
    assert torch.equal(q3, q)


def test_head_output_actions():
    reg = _registry()
    out = torch.randn(2, 5, 4, 8)
    zero = reg.add_head_output(1, 2, "zero")
    got = reg.on_output(1, out)
    assert torch.equal(got[:, :, 2], torch.zeros(2, 5, 8)) and torch.equal(got[:, :, [0, 1, 3]], out[:, :, [0, 1, 3]])
    assert zero.applied == 1
    reg2 = _registry()
    reg2.add_head_output(0, 1, "mean")
    got = reg2.on_output(0, out)
    valid = torch.tensor([[1] * 5, [1, 1, 1, 0, 0]]).bool()
    expected = out[:, :, 1][valid].mean(0)  # real tokens only
    torch.testing.assert_close(got[0, 0, 1], expected)
    reg3 = _registry()
    source = torch.randn(5, 8)
    reg3.add_head_output(0, 3, "patch", source, torch.tensor([1, 4]))
    got = reg3.on_output(0, out)
    assert torch.equal(got[:, [1, 4], 3], source[[1, 4]].expand(2, 2, 8))
    assert torch.equal(got[:, [0, 2, 3], 3], out[:, [0, 2, 3], 3])
    rec = reg3.add_head_output_recorder(0, [3, 0])
    reg3.on_output(0, out)
    assert rec.outputs[0].shape == (2, 5, 2, 8)


def test_intervention_action_errors():
    reg = _registry()
    with pytest.raises(ValueError, match="kv_head: 2 is not a KV head"):
        reg.add_scale(0, "k", [2], 2.0)
    with pytest.raises(ValueError, match="head: 4 is not a query head"):
        reg.add_scale(0, "q", [4], 2.0)
    with pytest.raises(ValueError, match="add_scale scales q or k"):
        reg.add_scale(0, "v", [0], 2.0)
    with pytest.raises(ValueError, match="alpha"):
        reg.add_scale(0, "q", [0], 0.0)
    with pytest.raises(ValueError, match="mode: unknown mode 'noise'"):
        reg.add_head_output(0, 0, "noise")
    with pytest.raises(ValueError, match="source"):
        reg.add_head_output(0, 0, "patch")
    reg.add_head_output(1, 0, "patch", torch.zeros(3, 8))
    with pytest.raises(ValueError, match=r"source has shape \[3, 8\]"):
        reg.on_output(1, torch.randn(2, 5, 4, 8))
    with pytest.raises(ValueError, match="attention output has shape"):
        reg.on_output(1, torch.randn(2, 5, 3, 8))
    lone = spectra.HookRegistry(1, 4, 2, 8, spectra.PositionSampler("all"))
    lone.add_head_output(0, 0, "mean")
    with pytest.raises(RuntimeError, match="outside a model forward"):
        lone.on_output(0, torch.randn(1, 5, 4, 8))


# ---- row stats ----

ROW_STATS = ("entropy", "entropy_normalized", "max_attn", "argmax", "k_eff", "sink_mass", "sink_mass_n", "n_visible")


def _row_stats_inputs(b=3, heads=8, kv=2, t=7, cached=0, dim=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, heads, t, dim, generator=g).to(dtype)
    k = torch.randn(b, kv, cached + t, dim, generator=g).to(dtype)
    valid = torch.ones(b, t, dtype=torch.bool)
    valid[1, :2] = False  # left padding
    valid[2, 5:] = False  # right padding
    return q, k, valid


def _per_head_columns(q, k, valid, heads, example_ids, positions, scaling, threshold=0.9, n_sink=4, **mask):
    """The drained columns, built one head at a time with the public ops (example-major, then head)."""
    b, n_heads, t, _ = q.shape
    group = n_heads // k.shape[1]
    cached = k.shape[2] - t
    key_valid = torch.cat([torch.ones(b, cached, dtype=torch.bool), valid], 1)
    # Without a cache, a left-padded row is measured as if right-padded (sink = its first real key,
    # argmax from there): rotated left by its leading pads, and the statistics rotated back.
    lead = [int((valid[i].long().cumsum(0) == 0).sum()) % t if cached == 0 else 0 for i in range(b)]

    def rotate(x, sign):  # (B, ..., T, [D]) per row along the token axis
        dim = -2 if x.dim() == 4 else -1
        return torch.stack([x[i].roll(sign * lead[i], dims=dim) for i in range(b)])

    per_head = {}
    for h in heads:
        kv = h // group
        s = spectra.attn_row_stats(
            rotate(q[:, h : h + 1], -1),
            rotate(k[:, kv : kv + 1], -1),
            scaling,
            key_valid=rotate(key_valid, -1),
            threshold=threshold,
            n_sink=n_sink,
            **mask,
        )
        cols = {name: rotate(getattr(s, name), 1)[:, 0] for name in ROW_STATS}
        cols["q_norm"] = spectra.vec_stats(q[:, h]).norm
        cols["k_norm"] = spectra.vec_stats(k[:, kv, cached:]).norm
        per_head[h] = cols
    out = {name: [] for name in ("example_id", "head", "position", *ROW_STATS, "q_norm", "k_norm")}
    for i in range(b):
        real = valid[i]
        n = int(real.sum())
        for h in heads:
            out["example_id"].append(torch.full((n,), example_ids[i]))
            out["head"].append(torch.full((n,), h))
            out["position"].append(positions[i][real])
            for name, values in per_head[h].items():
                out[name].append(values[i][real])
    return {name: torch.cat(parts) for name, parts in out.items()}


@pytest.mark.parametrize(
    ("heads", "kv", "cached"),
    [([0, 3, 5], 2, 0), ([5, 3, 0, 3], 2, 3), ([6, 7], 2, 0), (list(range(8)), 2, 0), ([1, 6], 8, 2), ([2], 1, 0)],
)
def test_row_stats_columns_match_per_head_ops(heads, kv, cached):
    q, k, valid = _row_stats_inputs(kv=kv, cached=cached)
    reg = spectra.HookRegistry(2, 8, kv, 16, spectra.PositionSampler("all"))
    action = reg.add_row_stats(1, heads, threshold=0.8, n_sink=2)
    assert action.heads == sorted(set(heads)) and action.backend == "auto"
    positions = torch.arange(7).expand(3, 7) + 10
    example_ids = (4, 9, 2)
    reg.begin_batch(torch.tensor(example_ids), positions, valid)
    reg.on_attention(1, q, k, torch.zeros_like(k), 0.25, None, True, 4)
    reg.end_batch()
    got = action.drain()
    want = _per_head_columns(
        q, k, valid, sorted(set(heads)), example_ids, positions, 0.25, threshold=0.8, n_sink=2, sliding_window=4
    )
    assert set(got) == set(want)
    for name, column in want.items():
        expected = column.float() if column.is_floating_point() else column.long()
        assert got[name].dtype == expected.dtype, name
        torch.testing.assert_close(got[name], expected, rtol=0, atol=0, equal_nan=True, msg=name)
    assert action.drain()["entropy"].shape == (0,)


def test_row_stats_chunks_discard_and_dtypes():
    q, k, valid = _row_stats_inputs(dtype=torch.float64)
    reg = spectra.HookRegistry(1, 8, 2, 16, spectra.PositionSampler("all"))
    action = reg.add_row_stats(0, [0, 3, 5])
    for step, discard in ((0, False), (1, True), (2, False)):
        reg.begin_batch(torch.tensor([step, step + 10, step + 20]), torch.arange(7).expand(3, 7), valid)
        reg.on_attention(0, q * (step + 1), k, k, 0.25)
        reg.end_batch(discard=discard)
    got = action.drain()  # the kept forwards in order, each example-major
    assert torch.unique_consecutive(got["example_id"]).tolist() == [0, 10, 20, 2, 12, 22]
    assert len(got["head"]) == 2 * 3 * int(valid.sum())
    for name in ("entropy", "q_norm", "k_norm"):
        assert got[name].dtype == torch.float32
    for name in ("argmax", "k_eff", "n_visible", "head", "position", "example_id"):
        assert got[name].dtype == torch.int64


def test_row_stats_backend_argument():
    q, k, valid = _row_stats_inputs()
    reg = spectra.HookRegistry(1, 8, 2, 16, spectra.PositionSampler("all"))
    with pytest.raises(ValueError, match="backend: unknown backend 'cuda'; allowed backends are auto, native, torch"):
        reg.add_row_stats(0, [1], backend="cuda")
    native = reg.add_row_stats(0, [1, 6], backend="native")
    auto = reg.add_row_stats(0, [1, 6])
    reg.begin_batch(torch.tensor([0, 1, 2]), torch.arange(7).expand(3, 7), valid)
    reg.on_attention(0, q, k, k, 0.25)
    reg.end_batch()
    a, b = native.drain(), auto.drain()
    assert native.backend == "native"
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, equal_nan=True, msg=name)


def test_row_stats_torch_backend_uses_the_torch_overloads():
    q, k, valid = _row_stats_inputs()
    reg = spectra.HookRegistry(1, 8, 2, 16, spectra.PositionSampler("all"))
    action = reg.add_row_stats(0, [0, 3, 5], backend="torch")
    reg.begin_batch(torch.tensor([0, 1, 2]), torch.arange(7).expand(3, 7), valid)
    defined = (
        "torch" in torch.ops.spectra.attn_row_stats.overloads() and "torch" in torch.ops.spectra.vec_stats.overloads()
    )
    if not defined:
        with pytest.raises(RuntimeError, match="spectra.ops was not imported"):
            reg.on_attention(0, q, k, k, 0.25)
        return
    reg.on_attention(0, q, k, k, 0.25)
    reg.end_batch()
    got = action.drain()
    want = _per_head_columns(q, k, valid, [0, 3, 5], (0, 1, 2), torch.arange(7).expand(3, 7), 0.25)
    for name in ("example_id", "head", "position", "n_visible"):
        assert torch.equal(got[name], want[name]), name
    for name in ("entropy", "max_attn", "q_norm", "k_norm"):
        torch.testing.assert_close(got[name], want[name].float(), rtol=1e-5, atol=1e-5)


def test_row_stats_torch_backend_without_spectra_ops_says_so():
    # The .torch overloads come from Python (spectra.ops); the native module alone does not have them.
    code = """
import sys, torch
from spectra import _core
assert "spectra.ops" not in sys.modules
reg = _core.HookRegistry(1, 2, 1, 4, _core.PositionSampler("all"))
reg.add_row_stats(0, [0], backend="torch")
reg.begin_batch(torch.tensor([0]), torch.arange(3)[None], torch.ones(1, 3, dtype=torch.bool))
try:
    reg.on_attention(0, torch.randn(1, 2, 3, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4), 0.5)
except RuntimeError as error:
    print(error)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "spectra::attn_row_stats.torch is not defined; spectra.ops was not imported" in out
