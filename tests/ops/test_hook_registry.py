"""The native HookRegistry and PositionSampler on hand-made tensors (no model)."""

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
