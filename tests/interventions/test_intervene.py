"""Interventions in real forward passes: baseline (bitwise), isolation, GQA groups, placement after
QK-norm, head-output ablation against an independent weight surgery, patching, composition with
Probe, bad input and hook hygiene. Hand-computed cases: the GQA group of a scaled KV head and the placement after QK-norm."""

from __future__ import annotations

import math

import pytest
import torch

import spectra
from spectra import AblateHead, PatchHead, ScaleKey, ScaleLogits, ScaleQuery
from spectra.models import adapter_for
from spectra.models.random_init import VOCAB_SIZE, tiny_model

B, T = 2, 10
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "smollm3", "phi", "gpt_neox", "gpt2", "bert"]
EAGER_ONLY = {"gemma2"}
CASES = [
    pytest.param(family, impl, id=f"{family}-{impl}")
    for family in FAMILIES
    for impl in ("eager", "sdpa")
    if not (impl == "sdpa" and family in EAGER_ONLY)
]


def inputs_for(model, padded: bool = True) -> dict:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB_SIZE, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    if padded:
        mask[1, -3:] = 0  # right padding on the second row
    return {"input_ids": ids, "attention_mask": mask}


def last_layer(model) -> int:
    return adapter_for(model).n_layers - 1


@pytest.mark.parametrize("family,impl", CASES)
def test_baseline_is_bitwise(family, impl):
    model = tiny_model(family, impl)
    report = spectra.check_baseline(model, inputs_for(model))
    assert report.logits_equal and report.max_abs_diff == 0.0


@pytest.mark.parametrize("family,impl", CASES)
def test_isolation_of_every_kind(family, impl):
    model = tiny_model(family, impl)
    a = adapter_for(model)
    inputs = inputs_for(model)
    layer = last_layer(model)
    group = a.n_heads // a.n_kv_heads
    for iv, changed in (
        (ScaleQuery(layer, 1, 2.0), (1,)),
        (ScaleKey(layer, a.n_kv_heads - 1, 0.5), tuple(range(a.n_heads - group, a.n_heads))),
        (ScaleLogits(layer, 0, 3.0), tuple(range(group))),
        (AblateHead(layer, 2), (2,)),
        (AblateHead(0, 1, mode="mean"), (1,)),
        (ScaleQuery(0, 0, 1.0), ()),
    ):
        report = spectra.check_isolation(model, iv, inputs)
        assert report.ok, str(report)
        assert report.changed_output_heads == changed, str(report)
        # A bare encoder (bert) reports its last hidden state's change; LMs the KL of their logits.
        effect = report.hidden_change if report.output == "last_hidden_state" else report.kl_logits
        assert report.output == ("last_hidden_state" if family == "bert" else "logits")
        if iv.is_identity():
            assert effect == 0.0
        else:
            assert effect > 0.0


def output_projection(model, layer: int):
    """The linear map applied to the merged head outputs, found independently of Spectra."""
    a = adapter_for(model)
    attn = a.attention[layer]
    for name in ("o_proj", "c_proj", "dense"):
        if hasattr(attn, name):
            return getattr(attn, name)
    return model.encoder.layer[layer].attention.output.dense  # BERT: BertSelfOutput.dense


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_ablation_equals_zeroing_the_output_projection_columns(family):
    # An independent construction of "head h contributes nothing": its input columns of o_proj set to 0.
    model = tiny_model(family, "eager")
    a = adapter_for(model)
    inputs = inputs_for(model, padded=False)
    layer, head, d = last_layer(model), 1, a.head_dim
    with torch.no_grad(), spectra.intervene(model, AblateHead(layer, head)):
        ablated = model(**inputs)
    proj = output_projection(model, layer)
    weight = proj.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        if type(proj).__name__ == "Conv1D":  # GPT-2: weight is (in, out)
            weight[head * d : (head + 1) * d, :] = 0
        else:
            weight[:, head * d : (head + 1) * d] = 0
        surgery = model(**inputs)
        weight.copy_(saved)
    out_a = getattr(ablated, "logits", None)
    out_a = out_a if out_a is not None else ablated.last_hidden_state
    out_s = getattr(surgery, "logits", None)
    out_s = out_s if out_s is not None else surgery.last_hidden_state
    torch.testing.assert_close(out_a, out_s, rtol=1e-5, atol=1e-5)


def test_g8_tiny_llama_isolation_and_sanity():
    model = tiny_model("llama", "sdpa", num_hidden_layers=2, head_dim=8)
    ids = torch.randint(3, VOCAB_SIZE, (1, 12), generator=torch.Generator().manual_seed(0))
    spectra.check_baseline(model, ids, [ScaleQuery(layer, h, 1.0) for layer in range(2) for h in range(4)])
    report = spectra.check_isolation(model, ScaleQuery(1, 1, 2.0), ids)
    assert abs(report.q_norm_ratios[1] / 2.0 - 1) <= 1e-6
    assert report.other_q_equal and report.other_k_equal and report.v_equal and report.upstream_layers_equal
    assert report.kl_logits > 0


def test_g7_gqa_mapping_regression():
    # The seed code scaled KV head h % Hkv; heads 19/8/23 of a 32/8 model read KV heads 4/2/5.
    for head, kv in ((19, 4), (8, 2), (23, 5)):
        assert ScaleLogits(0, head, 4.0).k_factors(32, 8) == {kv: 2.0}
        assert head in ScaleKey(0, kv, 2.0).affected_heads(32, 8)
        assert spectra.kv_group(32, 8, kv) == tuple(range(4 * kv, 4 * kv + 4))


def test_g7_q_and_k_scaling_give_the_same_target_entropy():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 8, 6, 4, generator=gen), torch.randn(1, 2, 6, 4, generator=gen)
    q_scaled = q.clone()
    q_scaled[:, 5] *= 1.5
    k_scaled = k.clone()
    k_scaled[:, 5 // 4] *= 1.5
    by_q = spectra.attn_row_stats(q_scaled, k).entropy
    by_k = spectra.attn_row_stats(q, k_scaled).entropy
    torch.testing.assert_close(by_q[:, 5], by_k[:, 5], atol=1e-6, rtol=0)
    base = spectra.attn_row_stats(q, k).entropy
    assert torch.equal(by_k[:, :4], base[:, :4])  # the other group is bitwise untouched
    assert not torch.equal(by_k[:, 4:], base[:, 4:])


def test_scale_before_qk_norm_vanishes_ours_does_not():
    # The placement rule on Qwen3: a per-head RMSNorm undoes a scale applied to q_proj's output.
    model = tiny_model("qwen3", "sdpa")
    a = adapter_for(model)
    ids = torch.randint(3, VOCAB_SIZE, (1, 9), generator=torch.Generator().manual_seed(0))
    layer, head, d = 1, 2, a.head_dim

    def captured_q(extra_context=None, pre_norm_alpha=None):
        probe = spectra.Probe(model, layers=[layer], heads=[head], capture="q")
        handle = None
        if pre_norm_alpha is not None:

            def scale(module, args, output):
                output = output.clone()
                output[..., head * d : (head + 1) * d] *= pre_norm_alpha
                return output

            handle = a.attention[layer].q_proj.register_forward_hook(scale)
        try:
            with torch.no_grad(), probe:
                if extra_context is not None:
                    with extra_context:
                        model(ids)
                else:
                    model(ids)
        finally:
            if handle is not None:
                handle.remove()
        return probe.captured(layer, head, "q").vectors.double()

    base = captured_q()
    pre_norm = captured_q(pre_norm_alpha=2.0)
    ours = captured_q(extra_context=spectra.intervene(model, ScaleQuery(layer, head, 2.0)))
    assert pre_norm.norm() / base.norm() == pytest.approx(1.0, abs=1e-3)
    assert ours.norm() / base.norm() == pytest.approx(2.0, rel=1e-6)


def test_patch_restores_the_clean_run():
    model = tiny_model("llama", "sdpa")
    gen = torch.Generator().manual_seed(2)
    clean = torch.randint(3, VOCAB_SIZE, (1, T), generator=gen)
    corrupt = clean.clone()
    corrupt[0, 3] = (corrupt[0, 3] + 7) % VOCAB_SIZE
    outputs = spectra.record_head_outputs(model, clean, layers=[1], heads=[2])
    with torch.no_grad():
        corrupt_out = model(corrupt).logits
        with spectra.intervene(model, PatchHead(1, 2, source=outputs)):
            patched = model(corrupt).logits
    assert not torch.equal(patched, corrupt_out)
    rec = spectra.OutputRecorder(model, layers=[1], heads=[2])
    with torch.no_grad(), spectra.intervene(model, PatchHead(1, 2, source=outputs, positions=[5, 6])), rec:
        model(corrupt)
    got = rec.output(1)[0, :, 0]
    assert torch.equal(got[5:7], outputs[(1, 2)][0, 5:7])
    with torch.no_grad(), spectra.intervene(model, PatchHead(1, 2, source=outputs)):
        with pytest.raises(ValueError, match="source has shape"):
            model(torch.cat([corrupt, corrupt], 1))


def test_mean_ablation_with_a_given_mean():
    model = tiny_model("llama", "sdpa")
    ids = torch.randint(3, VOCAB_SIZE, (2, T), generator=torch.Generator().manual_seed(4))
    mean = spectra.record_head_outputs(model, ids, layers=[0], heads=[3]).mean(0, 3)
    rec = spectra.OutputRecorder(model, layers=[0], heads=[3])
    with torch.no_grad(), spectra.intervene(model, AblateHead(0, 3, mode="mean", mean=mean)), rec:
        model(ids)
    assert torch.equal(rec.output(0)[:, :, 0], mean.expand(2, T, -1))


def test_probe_measures_the_intervened_forward_in_either_nesting_order():
    model = tiny_model("llama", "sdpa")
    ids = torch.randint(3, VOCAB_SIZE, (1, T), generator=torch.Generator().manual_seed(5))
    base_probe = spectra.Probe(model, layers=[1], heads=[1], capture=("q", "k"))
    with torch.no_grad(), base_probe:
        model(ids)
    q0, k0 = base_probe.captured(1, 1, "q").vectors, base_probe.captured(1, 0, "k").vectors
    scaling = adapter_for(model).scaling(1)
    expected = spectra.attn_row_stats((q0 * 1.5)[None, None], k0[None, None], scaling).entropy[0, 0]
    for order in ("intervene-first", "probe-first"):
        probe = spectra.Probe(model, layers=[1], heads=[1], capture=(), row_stats=True)
        ctx = spectra.intervene(model, ScaleQuery(1, 1, 1.5))
        first, second = (ctx, probe) if order == "intervene-first" else (probe, ctx)
        with torch.no_grad(), first, second:
            model(ids)
        got = torch.as_tensor(probe.drain_row_stats()["entropy"])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_effects_propagate_to_later_layers():
    model = tiny_model("llama", "sdpa")
    ids = torch.randint(3, VOCAB_SIZE, (1, T), generator=torch.Generator().manual_seed(6))
    probe0 = spectra.Probe(model, layers=[1], capture="q")
    with torch.no_grad(), probe0:
        model(ids)
    probe1 = spectra.Probe(model, layers=[1], capture="q")
    with torch.no_grad(), spectra.intervene(model, AblateHead(0, 0)), probe1:
        model(ids)
    assert not torch.equal(probe0.captured(1, 0, "q").vectors, probe1.captured(1, 0, "q").vectors)


def test_several_interventions_compose():
    model = tiny_model("llama", "sdpa")
    ids = torch.randint(3, VOCAB_SIZE, (1, T), generator=torch.Generator().manual_seed(7))
    probe = spectra.Probe(model, layers=[1], heads=[0, 1], capture=("q",))
    base = spectra.Probe(model, layers=[1], heads=[0, 1], capture=("q",))
    with torch.no_grad(), base:
        model(ids)
    with (
        torch.no_grad(),
        spectra.intervene(model, ScaleQuery(1, 0, 2.0), ScaleQuery(1, 0, 3.0), ScaleQuery(1, 1, 0.5)) as ctx,
        probe,
    ):
        model(ids)
    r0 = probe.captured(1, 0, "q").vectors.double().norm() / base.captured(1, 0, "q").vectors.double().norm()
    r1 = probe.captured(1, 1, "q").vectors.double().norm() / base.captured(1, 1, "q").vectors.double().norm()
    assert float(r0) == pytest.approx(6.0, rel=1e-6) and float(r1) == pytest.approx(0.5, rel=1e-6)
    assert ctx.affected_heads() == {1: {0: 6.0, 1: 0.5}}
    assert set(ctx.applied.values()) == {1}


# ---- bad input ----


@pytest.mark.parametrize("alpha", [0, -1.0, math.nan, math.inf])
def test_alpha_must_be_finite_and_positive(alpha):
    with pytest.raises(ValueError, match="alpha"):
        ScaleQuery(0, 0, alpha)
    with pytest.raises(ValueError, match="alpha"):
        ScaleKey(0, 0, alpha)
    with pytest.raises(ValueError, match="alpha"):
        ScaleLogits(0, 0, alpha)


def test_alpha_type():
    with pytest.raises(TypeError, match="alpha"):
        ScaleQuery(0, 0, "2")
    with pytest.raises(TypeError, match="alpha"):
        ScaleQuery(0, 0, True)


def test_out_of_range_targets_name_the_argument_and_the_allowed_range():
    model = tiny_model("llama", "sdpa")  # 2 layers, 4 query heads, 2 KV heads
    with pytest.raises(ValueError, match=r"head: .*allowed 0\.\.3"):
        spectra.intervene(model, ScaleQuery(0, 4, 2.0))
    with pytest.raises(ValueError, match=r"kv_head: .*allowed 0\.\.1"):
        spectra.intervene(model, ScaleKey(0, 2, 2.0))
    with pytest.raises(ValueError, match=r"layer: .*allowed 0\.\.1"):
        spectra.intervene(model, AblateHead(5, 0))
    with pytest.raises(ValueError, match="layer"):
        ScaleQuery(-1, 0, 2.0)
    with pytest.raises(ValueError, match="mode"):
        AblateHead(0, 0, mode="resample")
    with pytest.raises(ValueError, match="interventions"):
        spectra.intervene(model)
    with pytest.raises(TypeError, match="interventions"):
        spectra.intervene(model, (0, 0, 2.0))
    with pytest.raises(ValueError, match="source"):
        PatchHead(0, 0, source=torch.zeros(4))
    with pytest.raises(ValueError, match="source"):
        PatchHead(0, 0, source=torch.full((3, 24), math.nan))
    with pytest.raises(ValueError, match="head_dim"):
        spectra.intervene(model, PatchHead(0, 0, source=torch.zeros(3, 7)))
    with pytest.raises(ValueError, match="alpha=1"):
        spectra.check_baseline(model, torch.ones(1, 4, dtype=torch.long), [ScaleQuery(0, 0, 2.0)])
    with pytest.raises(ValueError, match="never an identity"):
        spectra.check_baseline(model, torch.ones(1, 4, dtype=torch.long), [AblateHead(0, 0)])
    with pytest.raises(ValueError, match="input_ids"):
        spectra.check_isolation(model, ScaleQuery(0, 0, 2.0), torch.ones(1, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="inputs"):
        spectra.check_isolation(model, ScaleQuery(0, 0, 2.0), [1, 2, 3])
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        spectra.check_baseline(model, torch.ones(1, 4, dtype=torch.long))
    model.eval()


def test_an_intervention_on_a_layer_the_forward_skips_raises():
    model = tiny_model("llama", "sdpa")
    ids = torch.ones(1, 5, dtype=torch.long)
    model.config.num_hidden_layers = 1  # Llama runs layers[:num_hidden_layers]: layer 1 is skipped
    try:
        with torch.no_grad(), spectra.intervene(model, AblateHead(1, 0)):
            with pytest.raises(spectra.InterventionNotReachedError, match="AblateHead"):
                model(ids)
    finally:
        model.config.num_hidden_layers = 2


def test_hooks_and_registrations_are_undone_even_on_error():
    from transformers import AttentionInterface

    model = tiny_model("llama", "sdpa")
    hooks_before = {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()}
    with pytest.raises(RuntimeError, match="boom"):
        with spectra.intervene(model, ScaleQuery(0, 0, 2.0)):
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    assert not any(name.startswith("spectra_") for name in AttentionInterface._global_mapping)
    assert {
        name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()
    } == hooks_before


def test_gradients_flow_through_an_intervention():
    model = tiny_model("llama", "eager")
    ids = torch.randint(3, VOCAB_SIZE, (1, 6), generator=torch.Generator().manual_seed(8))
    with spectra.intervene(model, ScaleQuery(0, 1, 2.0), AblateHead(1, 0)):
        loss = model(ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for p in model.model.layers[0].self_attn.q_proj.parameters())
    model.zero_grad()


def test_generation_with_a_kv_cache_matches_the_full_forward():
    # The scaled keys are copies: the cache keeps the model's own keys, and every step scales them again.
    model = tiny_model("llama", "sdpa")
    ids = torch.randint(3, VOCAB_SIZE, (1, 6), generator=torch.Generator().manual_seed(9))
    with torch.no_grad(), spectra.intervene(model, ScaleKey(1, 0, 3.0)):
        generated = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
        full = model(generated).logits
    assert torch.equal(full[0, ids.shape[1] - 1 : -1].argmax(-1), generated[0, ids.shape[1] :])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_isolation_in_other_dtypes(dtype):
    # The norm-ratio tolerance follows the model's dtype: one rounding of alpha * x per element.
    model = tiny_model("llama", "sdpa", dtype=dtype)
    ids = torch.randint(3, VOCAB_SIZE, (2, 9), generator=torch.Generator().manual_seed(10))
    spectra.check_baseline(model, ids)
    for iv in (ScaleQuery(1, 1, 1.3), ScaleKey(1, 0, 0.7), ScaleLogits(0, 3, 2.0), AblateHead(1, 2, "mean")):
        report = spectra.check_isolation(model, iv, ids)
        assert report.rtol == max(1e-6, torch.finfo(dtype).eps)


def test_the_checks_fail_when_the_model_does_something_else():
    # A checker that cannot fail proves nothing (the seed's sanity check could not): feed it interventions that lie.
    model = tiny_model("llama", "sdpa")
    ids = torch.randint(3, VOCAB_SIZE, (1, 8), generator=torch.Generator().manual_seed(11))

    class ClaimsHeadTwo(ScaleQuery):  # scales head 1 but says it scales head 2
        def q_factors(self, n_heads, n_kv_heads):
            return {2: self.alpha}

    with pytest.raises(spectra.InterventionCheckError, match="q head 1 changed but is not targeted"):
        spectra.check_isolation(model, ClaimsHeadTwo(1, 1, 2.0), ids)

    class WrongFactor(ScaleKey):  # scales by alpha but claims alpha squared
        def k_factors(self, n_heads, n_kv_heads):
            return {self.kv_head: self.alpha**2}

    report = spectra.check_isolation(model, WrongFactor(0, 1, 2.0), ids, raise_on_failure=False)
    assert not report.ok and any("norm ratio" in f for f in report.failures)
    other = torch.randint(3, VOCAB_SIZE, (1, 8), generator=torch.Generator().manual_seed(12))
    foreign = spectra.record_head_outputs(model, other, layers=[1], heads=[0])  # not this input's own output
    with pytest.raises(spectra.InterventionCheckError, match="logits DIFFER"):
        spectra.check_baseline(model, ids, [PatchHead(1, 0, source=foreign)])
