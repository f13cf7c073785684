"""Probe mechanics on a random tiny Llama and the embedded models: hook hygiene, samplers, example
ids, the Parquet store, failure handling and bad input. Per-family values and parity live in
test_probe_families.py."""

import gc
import json
import weakref

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM, LlamaConfig
from transformers.masking_utils import AttentionMaskInterface

import spectra
from spectra.models import zoo


def make_llama(attn_implementation="sdpa", seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation, dtype=torch.float32).eval()


@pytest.fixture
def llama():
    return make_llama()


def ids(batch=2, length=16, seed=1):
    return torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(seed))


def hook_counts(model):
    return {
        name: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for name, m in model.named_modules()
    }


def spectra_names():
    return [n for n in AttentionInterface._global_mapping if n.startswith("spectra_")] + [
        n for n in AttentionMaskInterface._global_mapping if n.startswith("spectra_")
    ]


# ---- hygiene ----


@pytest.mark.parametrize("stage", ["post_rope", "pre_rope"])
@pytest.mark.parametrize("route", ["hook", "inverse_rope"])
def test_exit_restores_model_and_registries(llama, stage, route):
    before = hook_counts(llama)
    with spectra.Probe(llama, capture=("q", "k", "v"), stage=stage, pre_rope_route=route), torch.no_grad():
        assert llama.config._attn_implementation == "spectra_sdpa"
        assert hook_counts(llama) != before
        llama(ids())
    assert llama.config._attn_implementation == "sdpa"
    assert hook_counts(llama) == before
    assert spectra_names() == []


def test_exception_in_forward_restores_and_drops_partial_batch(llama):
    probe = spectra.Probe(llama, stage=("pre_rope", "post_rope"))
    before = hook_counts(llama)

    def explode(module, args, output):
        raise RuntimeError("boom")

    # A user's hook on the last layer fails after earlier layers were already recorded.
    handle = llama.model.layers[2].register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom"), probe, torch.no_grad():
        llama(ids())
    handle.remove()
    assert llama.config._attn_implementation == "sdpa"
    assert hook_counts(llama) == before
    assert spectra_names() == []
    assert probe.captured(0, 0, "q", "post_rope").vectors.shape[0] == 0


def test_failed_batch_is_dropped_but_earlier_batches_kept(llama):
    probe = spectra.Probe(llama, layers=[0, 2])
    state = {"fail": False}

    def maybe_explode(module, args, output):
        if state["fail"]:
            raise RuntimeError("boom")

    handle = llama.model.layers[1].register_forward_hook(maybe_explode)
    try:
        with probe, torch.no_grad():
            llama(ids(batch=1))
            state["fail"] = True
            with pytest.raises(RuntimeError, match="boom"):
                llama(ids(batch=1, seed=2))  # layer 0 records, then the forward dies
            state["fail"] = False
            llama(ids(batch=1, seed=3))
    finally:
        handle.remove()
    first_and_third = torch.cat([ids(batch=1)[0], ids(batch=1, seed=3)[0]])
    assert probe.captured(0, 1, "q").vectors.shape[0] == 32 == probe.captured(2, 1, "q").vectors.shape[0]
    assert probe.captured(0, 1, "q").example_ids.tolist() == [0] * 16 + [2] * 16
    assert first_and_third.shape == (32,)


def test_user_hooks_survive_and_run(llama):
    calls = []
    handle = llama.model.layers[1].self_attn.q_proj.register_forward_hook(lambda m, a, o: calls.append(o.shape))
    pre = llama.model.register_forward_pre_hook(lambda m, a, k: calls.append("pre"), with_kwargs=True)
    with spectra.Probe(llama, stage="pre_rope"), torch.no_grad():
        llama(ids())
    with torch.no_grad():
        llama(ids())
    assert calls.count("pre") == 2 and len(calls) == 4
    assert len(llama.model.layers[1].self_attn.q_proj._forward_hooks) == 1
    handle.remove()
    pre.remove()


def test_probe_and_model_are_collectable():
    llama = make_llama()
    probe = spectra.Probe(llama, stage=("pre_rope", "post_rope"))
    with probe, torch.no_grad():
        llama(ids())
    model_ref, probe_ref = weakref.ref(llama), weakref.ref(probe)
    registry_ref = weakref.ref(probe.registry)
    del probe, llama
    gc.collect()
    assert probe_ref() is None
    assert registry_ref() is None
    assert model_ref() is None


def test_nested_probes_share_one_switch(llama):
    x = ids()
    with torch.no_grad():
        reference = llama(x).logits
    outer = spectra.Probe(llama, layers=[0], capture="q")
    inner = spectra.Probe(llama, layers=[0, 1], capture="k")
    with outer, torch.no_grad():
        with inner:
            assert torch.equal(llama(x).logits, reference)
        assert llama.config._attn_implementation == "spectra_sdpa"
        llama(x)
    assert llama.config._attn_implementation == "sdpa"
    assert outer.captured(0, 3, "q").vectors.shape[0] == 2 * 2 * 16
    assert inner.captured(1, 1, "k").vectors.shape[0] == 2 * 16
    torch.testing.assert_close(outer.captured(0, 3, "q").vectors[:32], outer.captured(0, 3, "q").vectors[32:])


def test_probe_cannot_be_reused(llama):
    probe = spectra.Probe(llama)
    with probe:
        pass
    with pytest.raises(RuntimeError, match="already used"):
        probe.__enter__()


# ---- samplers ----


def test_uniform_sampler_matches_reference_formula(llama):
    # qk-sniffer: torch.rand(S, generator=Generator().manual_seed(batch_seed(e, layer, kind))) < 1/B.
    mask64 = (1 << 64) - 1

    def mix64(x):
        x &= mask64
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & mask64
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & mask64
        return x ^ (x >> 31)

    def combine(s, v):
        s ^= v
        s = (s * 0x9E3779B97F4A7C15) & mask64
        return s ^ (s >> 32)

    def batch_seed(e, layer, kind):
        s = 0x243F6A8885A308D3
        for v in (mix64(e), mix64(layer), mix64(ord(kind) & 0xFF)):
            s = combine(s, v)
        return s

    length, bucket = 256, 8
    probe = spectra.Probe(llama, positions="uniform", bucket_size=bucket, capture=("q", "k"))
    probe.set_example_ids([11, 12])
    with probe, torch.no_grad():
        llama(ids(length=length))
    for layer in range(3):
        for kind in "qk":
            rows = probe.captured(layer, 0, kind)
            for e in (11, 12):
                draws = torch.rand(length, generator=torch.Generator("cpu").manual_seed(batch_seed(e, layer, kind)))
                expected = (draws < 1 / bucket).nonzero().flatten()
                got = rows.positions[rows.example_ids == e]
                assert got.tolist() == expected.tolist()
            assert (rows.buckets == rows.positions // bucket).all()
    # One mask per (layer, kind): every head of a layer shares the rows, q and k differ.
    q0, q3 = probe.captured(1, 0, "q"), probe.captured(1, 3, "q")
    assert torch.equal(q0.positions, q3.positions) and not torch.equal(q0.vectors, q3.vectors)
    assert not torch.equal(probe.captured(1, 0, "q").positions, probe.captured(1, 0, "k").positions)


def test_sampler_is_deterministic_and_seeded(llama):
    def positions(seed):
        probe = spectra.Probe(llama, layers=[0], capture="q", positions="log_uniform", bucket_size=4, seed=seed)
        with probe, torch.no_grad():
            llama(ids(batch=1, length=200))
        return probe.captured(0, 0, "q").positions.tolist()

    assert positions(0) == positions(0)
    assert positions(0) != positions(7)
    # log buckets: bucket = max(2, floor(log2(t+1))), keep probability 2^-bucket.
    probe = spectra.Probe(llama, layers=[0], capture="q", positions="log_uniform", bucket_size=4)
    with probe, torch.no_grad():
        llama(ids(batch=1, length=200))
    rows = probe.captured(0, 0, "q")
    expected = np.maximum(2, np.floor(np.log2(rows.positions.numpy() + 1))).astype(int)
    assert rows.buckets.tolist() == expected.tolist()


def test_pre_and_post_rope_share_positions(llama):
    probe = spectra.Probe(llama, positions="uniform", bucket_size=4, stage=("pre_rope", "post_rope"))
    with probe, torch.no_grad():
        llama(ids(length=64))
    pre, post = probe.captured(1, 1, "k", "pre_rope"), probe.captured(1, 1, "k", "post_rope")
    assert torch.equal(pre.positions, post.positions) and pre.vectors.shape == post.vectors.shape
    # RoPE is a rotation: norms agree, vectors do not (except position 0, where RoPE is identity).
    torch.testing.assert_close(pre.vectors.norm(dim=-1), post.vectors.norm(dim=-1))


def test_explicit_positions_and_padding(llama):
    x = ids(batch=2, length=12)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0  # right padding: row 1 has 8 real tokens
    probe = spectra.Probe(llama, capture="q", positions=[0, 5, 9])
    with probe, torch.no_grad():
        llama(x, attention_mask=mask)
    rows = probe.captured(0, 0, "q")
    assert rows.example_ids.tolist() == [0, 0, 0, 1, 1]
    assert rows.positions.tolist() == [0, 5, 9, 0, 5]


def test_left_padding_samples_the_same_positions_as_unpadded(llama):
    x = ids(batch=1, length=40)
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), x], dim=1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 40, dtype=torch.long)], dim=1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    plain = spectra.Probe(llama, positions="uniform", bucket_size=4)
    left = spectra.Probe(llama, positions="uniform", bucket_size=4)
    with plain, torch.no_grad():
        llama(x)
    with left, torch.no_grad():
        llama(padded, attention_mask=mask, position_ids=position_ids)
    a, b = plain.captured(1, 1, "k"), left.captured(1, 1, "k")
    assert a.positions.tolist() == b.positions.tolist()
    torch.testing.assert_close(a.vectors, b.vectors, atol=1e-5, rtol=1e-5)


# ---- store ----


def test_parquet_layout_sidecar_and_reader(llama, tmp_path):
    out = tmp_path / "capture"
    probe = spectra.Probe(
        llama,
        heads={0: [1], 2: [2, 3]},
        capture=("q", "k"),
        stage=("post_rope", "pre_rope"),
        positions="uniform",
        bucket_size=2,
        out_dir=out,
        keep_in_memory=True,
    )
    with probe, torch.no_grad():
        llama(ids(batch=2))
        llama(ids(batch=1, seed=5))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert files == sorted(
        [f"{root}l00h01q/data.parquet" for root in ("", "pre_rope/")]
        + [f"{root}l00h00k/data.parquet" for root in ("", "pre_rope/")]
        + [f"{root}l02h0{h}q/data.parquet" for root in ("", "pre_rope/") for h in (2, 3)]
        + [f"{root}l02h01k/data.parquet" for root in ("", "pre_rope/")]
    )
    assert not list(out.rglob("*.tmp"))
    table = pq.read_table(out / "l02h03q" / "data.parquet")
    assert str(table.schema.field("vector").type) == "fixed_size_list<element: float>[8]"
    assert [table.schema.field(c).type for c in ("bucket", "example_id", "position")] == ["int32"] * 3
    assert set(table.column("stage").to_pylist()) == {"post_rope"}
    assert table.column("sliding_window").null_count == table.num_rows
    assert set(table.column("example_id").to_pylist()) <= {0, 1, 2}
    back = spectra.read_capture(out, 2, 3, "q")
    mem = probe.captured(2, 3, "q", "post_rope")
    assert torch.equal(back.vectors, mem.vectors) and torch.equal(back.positions, mem.positions)
    assert torch.equal(back.example_ids, mem.example_ids) and torch.equal(back.buckets, mem.buckets)
    pre = spectra.read_capture(out, 0, 0, "k", "pre_rope")
    assert torch.equal(pre.vectors, probe.captured(0, 0, "k", "pre_rope").vectors)
    meta = json.loads((out / "spectra_capture.json").read_text())
    assert meta["kv_head_map"] == [0, 0, 1, 1]
    assert meta["heads"] == {"0": [1], "2": [2, 3]} and meta["kv_heads"] == {"0": [0], "2": [1]}
    assert meta["sampler"]["kind"] == "uniform" and meta["sampler"]["bucket_size"] == 2
    assert meta["model"]["family"] == "llama" and meta["model"]["head_dim"] == 8
    assert meta["n_examples"] == 3 and meta["spectra_version"] == spectra.__version__
    assert meta["rows"]["l02h03q/data.parquet"] == len(mem.positions)


def test_streaming_does_not_keep_rows_in_memory(llama, tmp_path):
    probe = spectra.Probe(llama, layers=[0], capture="q", out_dir=tmp_path)
    with probe, torch.no_grad():
        llama(ids())
    with pytest.raises(RuntimeError, match="keep_in_memory"):
        probe.captured(0, 0, "q")
    assert len(spectra.read_capture(tmp_path, 0, 0, "q").positions) == 32


def test_failed_capture_leaves_no_files(llama, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with spectra.Probe(llama, out_dir=tmp_path), torch.no_grad():
            llama(ids())
            raise RuntimeError("boom")
    assert list(tmp_path.rglob("*")) == []


def test_read_capture_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="layer 3 head 1"):
        spectra.read_capture(tmp_path, 3, 1, "k")
    with pytest.raises(FileNotFoundError, match="not a finished Spectra capture"):
        spectra.read_sidecar(tmp_path)


# ---- embedded models ----


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_embedded_models_parity_and_values(name):
    model, tok = zoo.load(name)
    x = tok(zoo.heldout_text()[:400], return_tensors="pt").input_ids[:, :64]
    with torch.no_grad():
        reference = model(x).logits
    probe = spectra.Probe(model, capture=("q", "k"), stage=("pre_rope", "post_rope"))
    with probe, torch.no_grad():
        logits = model(x).logits
    assert torch.equal(logits, reference)
    assert probe.kv_head_map == tuple(
        h // (model.config.num_attention_heads // model.config.num_key_value_heads)
        for h in range(model.config.num_attention_heads)
    )
    # Post-RoPE q·k at distance 0 equals pre-RoPE q·k (RoPE preserves same-position products).
    pre_q, post_q = probe.captured(2, 3, "q", "pre_rope"), probe.captured(2, 3, "q", "post_rope")
    pre_k, post_k = (
        probe.captured(2, probe.kv_head(3), "k", "pre_rope"),
        probe.captured(2, probe.kv_head(3), "k", "post_rope"),
    )
    torch.testing.assert_close(
        (pre_q.vectors * pre_k.vectors).sum(-1), (post_q.vectors * post_k.vectors).sum(-1), atol=1e-4, rtol=1e-4
    )


# ---- bad input ----


def test_bad_arguments_name_the_argument(llama):
    with pytest.raises(ValueError, match=r"layers: 3 is not a layer .* 0\.\.2"):
        spectra.Probe(llama, layers=[3])
    with pytest.raises(ValueError, match=r"heads: 4 .* allowed heads are 0\.\.3"):
        spectra.Probe(llama, heads=[4])
    with pytest.raises(ValueError, match=r"capture: unknown value 'o'; allowed values are q, k, v"):
        spectra.Probe(llama, capture="o")
    with pytest.raises(ValueError, match=r"stage: unknown value 'post_norm'; allowed values are pre_rope, post_rope"):
        spectra.Probe(llama, stage="post_norm")
    with pytest.raises(ValueError, match=r"positions: unknown sampler 'random'"):
        spectra.Probe(llama, positions="random")
    with pytest.raises(ValueError, match="bucket_size must be >= 1"):
        spectra.Probe(llama, positions="uniform", bucket_size=-1)
    with pytest.raises(ValueError, match="pre_rope_route"):
        spectra.Probe(llama, pre_rope_route="guess")
    with pytest.raises(ValueError, match="keep_in_memory"):
        spectra.Probe(llama, keep_in_memory=False)
    with pytest.raises(TypeError, match="model: expected a transformers PreTrainedModel"):
        spectra.Probe(torch.nn.Linear(2, 2))


def test_unsupported_architecture_lists_supported(monkeypatch):
    from transformers import MambaConfig

    # No softmax attention at all (a state-space model): no adapter, and the generic one finds nothing.
    model = AutoModelForCausalLM.from_config(MambaConfig(hidden_size=32, num_hidden_layers=1, vocab_size=64))
    with pytest.raises(spectra.UnsupportedModelError, match=r"'mamba' .* supported model types are llama, mistral"):
        spectra.Probe(model)


def test_positions_outside_the_sequence(llama):
    probe = spectra.Probe(llama, positions=[3, 40])
    with pytest.raises(ValueError, match=r"positions: \[40\] lie outside the sequence"), probe, torch.no_grad():
        llama(ids(length=16))
    assert llama.config._attn_implementation == "sdpa"


def test_captured_unknown_head_or_stage(llama):
    probe = spectra.Probe(llama, heads=[1], capture="q")
    with probe, torch.no_grad():
        llama(ids())
    with pytest.raises(ValueError, match="was not captured"):
        probe.captured(0, 2, "q")
    with pytest.raises(ValueError, match="kind: unknown kind 'x'"):
        probe.captured(0, 1, "x")
    with pytest.raises(ValueError, match="stage: unknown stage"):
        probe.captured(0, 1, "q", "middle")
    with pytest.raises(ValueError, match=r"head: 9 is not a query head"):
        probe.kv_head(9)


# ---- a real pretrained model: all-MiniLM-L6-v2 (BERT, bidirectional) ----


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_minilm_parity_and_bidirectional_attention_weights(attn_implementation):
    model, tokenizer = zoo.load_minilm(attn_implementation=attn_implementation)
    batch = tokenizer(
        ["In the beginning God created the heaven and the earth.", "And God said, Let there be light."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        reference = model(**batch, output_attentions=attn_implementation == "eager")
    probe = spectra.Probe(model, capture=("q", "k"), stage=("pre_rope", "post_rope"))
    with probe, torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert torch.equal(hidden, reference.last_hidden_state)
    lengths = batch["attention_mask"].sum(-1).tolist()
    assert probe.captured(0, 0, "q", "post_rope").vectors.shape[0] == sum(lengths)
    assert torch.equal(probe.captured(4, 7, "k", "pre_rope").vectors, probe.captured(4, 7, "k", "post_rope").vectors)
    if attn_implementation == "eager":
        # Bidirectional: every real token attends to every real token of its sequence.
        layer, head = 2, 5
        q, k = probe.captured(layer, head, "q", "post_rope"), probe.captured(layer, head, "k", "post_rope")
        scale = model.config.hidden_size // model.config.num_attention_heads
        for row, n in enumerate(lengths):
            qs, ks = q.vectors[q.example_ids == row], k.vectors[k.example_ids == row]
            weights = torch.softmax(qs @ ks.T / scale**0.5, dim=-1)
            torch.testing.assert_close(weights, reference.attentions[layer][row, head, :n, :n], atol=2e-6, rtol=1e-5)


def test_empty_sequence_is_refused(llama):
    with pytest.raises(ValueError, match=r"input_ids: the sequence is empty"), spectra.Probe(llama), torch.no_grad():
        llama(torch.zeros(1, 0, dtype=torch.long))
    assert llama.config._attn_implementation == "sdpa" and spectra_names() == []
