"""Models placed over devices with ``device_map`` (accelerate), checked on the CPU.

A machine without GPUs cannot put layers on two devices, so these tests use accelerate's disk
offload as the stand-in: offloaded layers keep their weights on ``meta`` and accelerate's hooks
(``module._hf_hook``) bring them in at forward time and move every layer's inputs — the same
machinery that moves activations between GPUs. On the embedded models, with layers split between
"cpu" and "disk" (the input embedding offloaded too) and with ``device_map="auto"``, Spectra must
see exactly what the plain model computes: logits with and without a Probe, captured Q/K,
``profile`` metrics, interventions, the weights fingerprint; and accelerate's hooks must be there
and working after every Spectra context exits.
"""

from __future__ import annotations

import sys

import pandas as pd
import pytest
import torch

pytest.importorskip("accelerate", reason="device_map needs accelerate (pip install accelerate; in the dev extra)")

import spectra  # noqa: E402
from spectra import AblateHead, PatchHead, ScaleKey, ScaleQuery  # noqa: E402
from spectra.capture.store import read_capture  # noqa: E402
from spectra.heads.dynamics import gamma_table  # noqa: E402
from spectra.io.identity import config_hash, weights_fingerprint  # noqa: E402
from spectra.jobs.capture.run import run_capture  # noqa: E402
from spectra.metrics.profile import METRICS  # noqa: E402
from spectra.models.devices import (  # noqa: E402
    check_device_map,
    input_device,
    is_dispatched,
    module_tensor,
    placement_kwargs,
)
from spectra.models.loading import load_model  # noqa: E402

MODELS = ("tiny-llama", "tiny-qwen3")
TEXT = "In the beginning God created the heaven and the earth. And the earth was without form, and void"


def split_map(n_layers: int) -> dict[str, str]:
    """Layers alternate between "disk" and "cpu", layer 0 and the (tied) embedding / LM head on disk."""
    device_map = {"model.embed_tokens": "disk", "lm_head": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu"}
    device_map.update({f"model.layers.{i}": "disk" if i % 2 == 0 else "cpu" for i in range(n_layers)})
    return device_map


class Pair:
    def __init__(self, name: str, tmp_path_factory) -> None:
        self.plain, self.tokenizer = load_model(name)
        n_layers = self.plain.config.num_hidden_layers
        self.device_map = split_map(n_layers)
        self.dispatched, _ = load_model(
            name, device_map=self.device_map, offload_folder=tmp_path_factory.mktemp(f"offload-{name}")
        )
        self.ids = self.tokenizer(TEXT, return_tensors="pt").input_ids
        self.n_layers = n_layers


@pytest.fixture(scope="module", params=MODELS)
def pair(request, tmp_path_factory) -> Pair:
    return Pair(request.param, tmp_path_factory)


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def accelerate_state(model) -> dict[str, tuple]:
    """Per module with an accelerate hook: the hook, the wrapped forward and the original forward."""
    return {
        name: (m._hf_hook, m.__dict__.get("forward"), m.__dict__.get("_old_forward"))
        for name, m in model.named_modules()
        if hasattr(m, "_hf_hook")
    }


def torch_hooks(model) -> dict[str, tuple]:
    return {name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for name, m in model.named_modules()}


# ---- loading and bad input ----


def test_split_map_offloads_layers_to_meta(pair):
    model = pair.dispatched
    assert model.hf_device_map == pair.device_map and is_dispatched(model) and not is_dispatched(pair.plain)
    assert model.model.layers[0].self_attn.q_proj.weight.device.type == "meta"
    assert model.model.embed_tokens.weight.device.type == "meta"
    assert model.model.layers[1].self_attn.q_proj.weight.device.type == "cpu"
    assert "model.layers.0.self_attn" in accelerate_state(model)


@pytest.mark.parametrize(
    "bad",
    ["gpu", "cuda", 3, ["cpu"], {}, {"model": "gpu0"}, {"model": -1}, {"model": True}, {"model": "meta"}, {0: "cpu"}],
)
def test_bad_device_map_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match="device_map"):
        check_device_map(bad)


def test_load_model_checks_placement_before_loading(tmp_path):
    with pytest.raises(ValueError, match=r"device_map: 'gpu' is not allowed; allowed are None, 'auto'"):
        load_model("tiny-llama", device_map="gpu")
    with pytest.raises(ValueError, match="max_memory"):
        load_model("tiny-llama", max_memory={"cpu": "1GiB"})
    with pytest.raises(ValueError, match="offload_folder"):
        load_model("tiny-llama", device_map={"": "disk"})
    with pytest.raises(ValueError, match="offload_folder"):
        load_model("tiny-llama", offload_folder=tmp_path)
    with pytest.raises(ValueError, match="device"):
        load_model("tiny-llama", device="not-a-device")


def test_missing_accelerate_is_a_clear_runtime_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)  # import accelerate -> ImportError
    with pytest.raises(RuntimeError, match=r"device_map: .*pip install accelerate"):
        load_model("tiny-llama", device_map="auto")
    assert placement_kwargs() == {}  # without a device map accelerate is not needed


def test_load_model_keeps_its_plain_behaviour():
    model, _ = load_model("tiny-llama", device="cpu")
    assert not is_dispatched(model) and next(model.parameters()).device.type == "cpu"


# ---- where inputs go ----


def test_input_device_on_offloaded_embeddings(pair):
    model = pair.dispatched
    # The old rule, "the first parameter's device", names meta here: inputs cannot go there.
    assert next(model.parameters()).device.type == "meta"
    assert input_device(model) == torch.device("cpu")
    assert input_device(pair.plain) == torch.device("cpu")


def test_input_device_follows_accelerate_hooks_and_the_device_map():
    from accelerate.hooks import AlignDevicesHook, SequentialHook
    from transformers import AutoConfig, AutoModelForCausalLM

    model, _ = spectra.zoo.load("tiny-llama")
    embeddings = model.get_input_embeddings()
    # The hook's execution device wins over the weight's device (set as an attribute only: no
    # forward is wrapped, and no tensor moves, so this runs without a GPU).
    embeddings._hf_hook = AlignDevicesHook(execution_device=torch.device("cuda", 1))
    assert input_device(model) == torch.device("cuda", 1)
    embeddings._hf_hook = SequentialHook(AlignDevicesHook(execution_device=2))
    assert input_device(model) == torch.device("cuda", 2)
    del embeddings._hf_hook
    assert input_device(model) == torch.device("cpu")
    # Weights on meta and no hooks: the device map's first GPU, else the CPU.
    config = AutoConfig.from_pretrained(spectra.zoo.model_path("tiny-llama"), local_files_only=True)
    with torch.device("meta"):
        empty = AutoModelForCausalLM.from_config(config)
    assert input_device(empty) == torch.device("cpu")
    empty.hf_device_map = {"model.embed_tokens": "disk", "model.layers": 1, "lm_head": "cpu"}
    assert input_device(empty) == torch.device("cuda", 1)


# ---- (a) logits, (b) captures ----


def test_logits_with_probe_are_bitwise_those_of_the_plain_model(pair):
    base = logits(pair.dispatched, pair.ids)
    probe = spectra.Probe(pair.dispatched, capture=("q", "k"), stage=("pre_rope", "post_rope"))
    with probe:
        probed = logits(pair.dispatched, pair.ids)
    assert torch.equal(probed, base)
    assert torch.equal(base, logits(pair.plain, pair.ids))


@pytest.mark.parametrize("route", ["hook", "inverse_rope"])
def test_captured_qk_equal_the_plain_models(pair, route):
    probes = []
    for model in (pair.plain, pair.dispatched):
        probe = spectra.Probe(model, capture=("q", "k", "v"), stage=("pre_rope", "post_rope"), pre_rope_route=route)
        with probe:
            logits(model, pair.ids)
        probes.append(probe)
    plain, dispatched = probes
    for layer in range(pair.n_layers):
        for stage in ("pre_rope", "post_rope"):
            for head in (0, 5):
                a, b = plain.captured(layer, head, "q", stage), dispatched.captured(layer, head, "q", stage)
                assert a.vectors.shape[0] == pair.ids.shape[1] and torch.equal(a.vectors, b.vectors)
                assert torch.equal(a.positions, b.positions)
            for kv in (0, 1):
                for kind in ("k", "v"):
                    assert torch.equal(
                        plain.captured(layer, kv, kind, stage).vectors,
                        dispatched.captured(layer, kv, kind, stage).vectors,
                    )


def test_run_capture_on_a_dispatched_model(pair, tmp_path):
    metas = [
        run_capture(model, pair.tokenizer, [(3, TEXT)], tmp_path / name, layers=[0, 1], heads=[2], progress=False)
        for name, model in (("plain", pair.plain), ("dispatched", pair.dispatched))
    ]
    assert metas[0]["rows"] == metas[1]["rows"]
    for layer in (0, 1):
        a = read_capture(tmp_path / "plain", layer=layer, head=2, kind="q")
        b = read_capture(tmp_path / "dispatched", layer=layer, head=2, kind="q")
        assert torch.equal(torch.as_tensor(a.vectors), torch.as_tensor(b.vectors))


# ---- (c) profile and other analyses ----


def test_profile_metrics_equal_the_plain_models(pair):
    mask = torch.ones_like(pair.ids)
    mask[0, -4:] = 0
    for attention_mask in (None, mask):
        a = spectra.profile(pair.plain, pair.ids, attention_mask, metrics=METRICS)
        b = spectra.profile(pair.dispatched, pair.ids, attention_mask, metrics=METRICS)
        pd.testing.assert_frame_equal(a, b)


def test_head_geometry_and_gamma_equal_the_plain_models(pair):
    batch = torch.randint(3, 4096, (2, 24), generator=torch.Generator().manual_seed(0))
    pd.testing.assert_frame_equal(
        spectra.head_geometry(pair.plain, [batch]), spectra.head_geometry(pair.dispatched, [batch])
    )
    # γ of an offloaded QK-norm is read through accelerate's offload map (empty for tiny-llama: no QK-norm).
    pd.testing.assert_frame_equal(gamma_table(pair.plain), gamma_table(pair.dispatched))


# ---- (d) interventions ----


def test_single_head_interventions_equal_the_plain_models(pair):
    base = logits(pair.plain, pair.ids)
    source = spectra.record_head_outputs(pair.plain, torch.flip(pair.ids, [1]), layers=[2], heads=[4])
    for iv in (
        ScaleQuery(0, 3, 2.0),
        ScaleKey(1, 1, 0.5),
        AblateHead(2, 5),
        AblateHead(3, 1, mode="mean"),
        PatchHead(2, 4, source, positions=[3, 7]),
    ):
        outs = []
        for model in (pair.plain, pair.dispatched):
            with spectra.intervene(model, iv):
                outs.append(logits(model, pair.ids))
        assert torch.equal(outs[0], outs[1]), iv
        assert not torch.equal(outs[0], base), iv
    recorded = spectra.record_head_outputs(pair.dispatched, torch.flip(pair.ids, [1]), layers=[2], heads=[4])
    assert torch.equal(recorded[(2, 4)], source[(2, 4)])
    report = spectra.check_isolation(pair.dispatched, ScaleQuery(1, 2, 3.0), pair.ids)
    assert report.ok and report.upstream_layers_equal and report.logits_changed


# ---- (e) accelerate's hooks survive Spectra's contexts ----


def test_accelerate_hooks_survive_spectra_contexts(pair):
    model = pair.dispatched
    hooks_before, torch_before = accelerate_state(model), torch_hooks(model)
    attn_before = model.config._attn_implementation
    assert hooks_before
    user_calls = []
    user = model.model.layers[1].self_attn.register_forward_hook(lambda *a: user_calls.append(1))
    try:
        probe = spectra.Probe(model, capture=("q", "k"), stage=("pre_rope", "post_rope"), row_stats=True)
        with probe, spectra.intervene(model, ScaleQuery(1, 0, 2.0)), spectra.HeadGeometry(model):
            assert accelerate_state(model) == hooks_before  # coexisting inside the block
            logits(model, pair.ids)
        with pytest.raises(RuntimeError, match="boom"), spectra.intervene(model, AblateHead(0, 1)):
            logits(model, pair.ids)
            raise RuntimeError("boom")
        assert accelerate_state(model) == hooks_before
        assert model.config._attn_implementation == attn_before
        assert user_calls  # the user's own hook fired and is still registered
        after = torch_hooks(model)
        assert after["model.layers.1.self_attn"] != torch_before["model.layers.1.self_attn"]
    finally:
        user.remove()
    assert torch_hooks(model) == torch_before  # Spectra left none of its hooks behind
    # ... and accelerate's still work: the forward runs, offloaded weights go back to meta.
    assert torch.equal(logits(model, pair.ids), logits(pair.plain, pair.ids))
    assert model.model.layers[0].self_attn.q_proj.weight.device.type == "meta"


# ---- (f) identity ----


def test_weights_fingerprint_and_config_hash_ignore_placement(pair):
    assert weights_fingerprint(pair.dispatched) == weights_fingerprint(pair.plain)
    assert config_hash(pair.dispatched) == config_hash(pair.plain)
    q_proj = pair.dispatched.model.layers[0].self_attn.q_proj
    assert torch.equal(module_tensor(q_proj, "weight"), pair.plain.model.layers[0].self_attn.q_proj.weight)


def test_fingerprint_tells_different_weights_apart(pair, tmp_path):
    other, _ = load_model(
        str(spectra.zoo.checkpoint_paths("tiny-qwen3")[0]), device_map=split_map(4), offload_folder=tmp_path
    )
    assert weights_fingerprint(other) != weights_fingerprint(pair.dispatched)


# ---- device_map="auto" ----


@pytest.mark.parametrize("name", MODELS)
def test_auto_device_map(name, tmp_path):
    plain, tok = load_model(name)
    ids = tok(TEXT, return_tensors="pt").input_ids
    base = logits(plain, ids)
    everything, _ = load_model(name, device_map="auto")  # no GPU here: every module on the CPU
    # A CPU budget of ~70% of the weights: "auto" puts the rest on disk (accelerate's own placement).
    budget = int(0.7 * sum(p.numel() * p.element_size() for p in plain.parameters()))
    squeezed, _ = load_model(name, device_map="auto", max_memory={"cpu": budget}, offload_folder=tmp_path)
    assert {"cpu", "disk"} <= set(squeezed.hf_device_map.values()), squeezed.hf_device_map
    for model in (everything, squeezed):
        probe = spectra.Probe(model, layers=[1], heads=[0, 5])
        with probe:
            assert torch.equal(logits(model, ids), base)
        with spectra.intervene(model, ScaleQuery(2, 1, 0.5)):
            scaled = logits(model, ids)
        with spectra.intervene(plain, ScaleQuery(2, 1, 0.5)):
            assert torch.equal(scaled, logits(plain, ids))
        pd.testing.assert_frame_equal(
            spectra.profile(model, ids, layers=[0, 3]), spectra.profile(plain, ids, layers=[0, 3])
        )
        assert weights_fingerprint(model) == weights_fingerprint(plain)


@pytest.mark.parametrize(
    "device_map",
    [{"model": "disk", "lm_head": "disk"}, {"": "disk"}],
    ids=["backbone-offloaded", "whole-model-offloaded"],
)
def test_probe_on_a_model_whose_backbone_forward_accelerate_wrapped(device_map, tmp_path):
    # Spectra reads the backbone's call arguments through its forward's signature: accelerate's
    # wrapper must not hide them (input_ids, attention_mask, position_ids).
    plain, tok = load_model("tiny-qwen3")
    model, _ = load_model("tiny-qwen3", device_map=device_map, offload_folder=tmp_path)
    ids = tok(TEXT, return_tensors="pt").input_ids
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    assert "model" in accelerate_state(model) or "" in accelerate_state(model)
    pd.testing.assert_frame_equal(
        spectra.profile(model, ids, mask, layers=[1]), spectra.profile(plain, ids, mask, layers=[1])
    )
    probe = spectra.Probe(model, layers=[2], heads=[3])
    with probe:
        assert torch.equal(logits(model, ids), logits(plain, ids))
    assert probe.captured(2, 3, "q").vectors.shape == (ids.shape[1], 32)
    assert weights_fingerprint(model) == weights_fingerprint(plain)
