"""The native HookRegistry and PositionSampler on hand-made tensors (no model)."""

import pytest
import torch

import spectra


def registry(sampler=None, layers=2, heads=4, kv=2, dim=8):
    return spectra.HookRegistry(layers, heads, kv, dim, sampler or spectra.PositionSampler("all"))


def batch(reg, b=2, t=6, example_ids=(0, 1), valid=None):
    positions = torch.arange(t).expand(b, t)
    reg.begin_batch(torch.tensor(example_ids), positions, torch.ones(b, t, dtype=torch.bool) if valid is None else valid)


def qkv(b=2, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, t, 8, generator=g), torch.randn(b, 2, t, 8, generator=g), torch.randn(b, 2, t, 8, generator=g)


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
