"""Left, right and no padding give the same per-token metrics for the same text.

The matrix (``test_padding_matrix``): padding (none / left / right) x special tokens (off / on) x
attention (eager / sdpa), on four models: the embedded zoo decoders ``tiny-llama`` and
``tiny-qwen3``, a random-init tiny Gemma2 (attention soft-capping, a sliding window shorter than the
text; saved with tiny-llama's tokenizer) and the embedded MiniLM encoder ``all-minilm-l6-v2``. Each
cell profiles one text with every metric (``spectra.profile``) and compares the table with that of
the text alone in a batch of one: "left" and "right" put the text padded beside a longer text;
"none" is the longer text, unpadded in that batch, and the text alone with an all-ones mask. With
special tokens "on" each text is wrapped in the tokenizer's own (BOS for the decoders, [CLS] ... [SEP]
for MiniLM) and padding goes outside them. The decoders run with ``ignore_first`` 0 and 2, MiniLM
with 0.

What makes them agree: positions come from the mask (index among the real tokens, for RoPE and for
BERT's absolute position embeddings alike), ``token`` and ``ignore_first`` count real tokens, pads
are masked as keys (on both sides of a query in the encoder), the sink is the first real key and
``argmax`` an offset from the first real token. Gemma2 refuses sdpa, so its sdpa cells load eager
with an ``AttentionFallbackWarning`` and must agree all the same.

The other tests (explicit position ids, ``Probe`` captures, ``scale_sweep`` / ``head_stats``, the
intervention checks) run on the decoders; explicit position ids also on MiniLM.
"""

import shutil
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

import spectra
from spectra.capture.forward import padded_position_ids
from spectra.data.windows import special_tokens
from spectra.metrics.profile import METRICS
from spectra.models import zoo
from spectra.models.loading import AttentionFallbackWarning, load_model
from spectra.models.random_init import tiny_model

TEXT = "In the beginning God created the heaven and the earth."
LONGER = "And the earth was without form, and void; and darkness was upon the face of the deep."
KEYS = ["layer", "head", "token"]

GEMMA2 = "tiny-gemma2"  # random-init, saved to a temporary folder with tiny-llama's tokenizer
MINILM = "all-minilm-l6-v2"
MODELS = ("tiny-llama", "tiny-qwen3", GEMMA2, MINILM)
ATTENTION = ("eager", "sdpa")
#: ignore_first per model: the encoder has no causal warm-up to skip.
IGNORE_FIRST = {"tiny-llama": (0, 2), "tiny-qwen3": (0, 2), GEMMA2: (0, 2), MINILM: (0,)}
#: Where the other tests run: the zoo decoders with both backends, Gemma2 with the one it has.
DECODERS = [(m, a) for m in ("tiny-llama", "tiny-qwen3") for a in ATTENTION] + [(GEMMA2, "eager")]


class Loaded(NamedTuple):
    model: torch.nn.Module
    tok: object
    name: str
    attn: str
    fallbacks: list  # AttentionFallbackWarning records from load_model


def _gemma2_folder(root: Path) -> Path:
    folder = root / "gemma2"
    tiny_model("gemma2", "eager", vocab_size=4096).save_pretrained(folder)  # tiny-llama's vocab size
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(zoo.model_path("tiny-llama")) / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """load(name, attn) -> Loaded, each (model, attention) loaded once per module."""
    cache: dict[tuple[str, str], Loaded] = {}

    def get(name: str, attn: str) -> Loaded:
        if (name, attn) not in cache:
            source = name
            if name == GEMMA2:
                source = str(_gemma2_folder(tmp_path_factory.mktemp("models")))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", AttentionFallbackWarning)
                model, tok = load_model(source, attn_implementation=attn)
            fallbacks = [w for w in caught if issubclass(w.category, AttentionFallbackWarning)]
            for w in caught:  # anything else goes on to pytest
                if w not in fallbacks:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            cache[name, attn] = Loaded(model, tok, name, attn, fallbacks)
        return cache[name, attn]

    return get


@pytest.fixture(scope="module", params=DECODERS, ids=lambda p: "-".join(p))
def decoder(request, load):
    return load(*request.param)


def encode(tok, text, special=False):
    prefix, suffix = special_tokens(tok) if special else ([], [])
    return prefix + list(tok(text, add_special_tokens=False).input_ids) + suffix


def padded_batch(tok, special=False):
    """(ids, mask) rows: the longer text, TEXT left-padded, TEXT right-padded; and TEXT alone.

    Padding lies outside the special tokens: before the BOS / [CLS], after the [SEP]."""
    text, longer = encode(tok, TEXT, special), encode(tok, LONGER, special)
    assert len(longer) > len(text) + 3
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    n, t = len(text), len(longer)
    ids = torch.full((3, t), pad, dtype=torch.long)
    mask = torch.zeros(3, t, dtype=torch.long)
    ids[0], mask[0] = torch.tensor(longer), 1
    ids[1, t - n :], mask[1, t - n :] = torch.tensor(text), 1
    ids[2, :n], mask[2, :n] = torch.tensor(text), 1
    return ids, mask, torch.tensor([text])


def sample(table, i):
    return table[table["sample"] == i].drop(columns="sample").sort_values(KEYS).reset_index(drop=True)


def assert_same(got, want, what):
    assert got[KEYS].equals(want[KEYS]), what
    for name in METRICS:
        a, b = got[name].to_numpy(np.float64), want[name].to_numpy(np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b)), (what, name)
        ok = ~np.isnan(a)
        if name in ("k_eff", "argmax"):  # integers: at most a float32 near-tie apart
            assert (a[ok] == b[ok]).mean() > 0.98, (what, name)
        else:
            np.testing.assert_allclose(a[ok], b[ok], atol=2e-5, rtol=1e-4, err_msg=f"{what} {name}")


MATRIX = [
    pytest.param(
        name, attn, padding, special, ignore_first, id=f"{name}-{attn}-{padding}-{special}-ignore{ignore_first}"
    )
    for name in MODELS
    for attn in ATTENTION
    for padding in ("none", "left", "right")
    for special in ("plain", "special")
    for ignore_first in IGNORE_FIRST[name]
]


@pytest.mark.parametrize(("name", "attn", "padding", "special", "ignore_first"), MATRIX)
def test_padding_matrix(load, name, attn, padding, special, ignore_first):
    loaded = load(name, attn)
    model, tok = loaded.model, loaded.tok
    if name == GEMMA2 and attn == "sdpa":  # transformers refuses sdpa for Gemma2: eager, with a notice
        assert len(loaded.fallbacks) == 1
        assert "does not support attn_implementation='sdpa'; loaded with 'eager'" in str(loaded.fallbacks[0].message)
        assert model.config._attn_implementation == "eager"
    else:
        assert not loaded.fallbacks
        assert model.config._attn_implementation == attn

    ids, mask, alone = padded_batch(tok, special == "special")
    if special == "special":
        prefix, suffix = special_tokens(tok)
        assert prefix  # BOS / [CLS]
        assert (
            alone[0, : len(prefix)].tolist() == prefix and alone[0, alone.shape[1] - len(suffix) :].tolist() == suffix
        )

    def profile(ids, mask=None):
        return spectra.profile(model, ids, mask, metrics=METRICS, ignore_first=ignore_first)

    single = sample(profile(alone), 0)
    if padding == "none":
        table = profile(ids, mask)
        cases = [
            (sample(table, 0), sample(profile(ids[:1]), 0), ids.shape[1], "longer text, unpadded in a padded batch"),
            (sample(profile(alone, torch.ones_like(alone)), 0), single, alone.shape[1], "all-ones mask vs none"),
        ]
    else:
        row = 1 if padding == "left" else 2
        pads = mask[row] == 0
        assert pads.any() and bool(pads[0] if padding == "left" else pads[-1])  # padded on that side
        cases = [(sample(profile(ids, mask), row), single, alone.shape[1], f"{padding}-padded vs alone")]

    for got, want, n, what in cases:
        assert sorted(got["token"].unique()) == list(range(n)), what  # real-token positions
        assert_same(got, want, what)
        if name == MINILM:  # bidirectional: every real token sees every real key and no pad
            assert (got["n_visible"] == n).all(), what
        elif ignore_first == 0:  # causal: the first real key is the sink, the first real token sees only it
            first = got[got["token"] == 0]
            np.testing.assert_allclose(first["sink_mass"], 1.0, atol=1e-6)
            assert (first["argmax"] == 0).all()
            assert (first["n_visible"] == 1).all()
        if ignore_first:
            assert got.loc[got["token"] < ignore_first, "entropy"].isna().all()
            assert got.loc[got["token"] >= ignore_first, "entropy"].notna().all()


@pytest.mark.parametrize(("name", "attn"), DECODERS + [(MINILM, "eager"), (MINILM, "sdpa")])
def test_explicit_position_ids_are_used_as_given(load, name, attn):
    model, tok = load(name, attn)[:2]
    ids, mask, alone = padded_batch(tok, special=True)
    derived = padded_position_ids(mask)
    a = spectra.profile(model, ids, mask, ignore_first=0)
    b = spectra.profile(model, ids, mask, position_ids=derived, ignore_first=0)
    np.testing.assert_allclose(a["entropy"], b["entropy"], atol=1e-6)
    shifted = spectra.profile(model, alone, position_ids=torch.arange(alone.shape[1])[None] + 5, ignore_first=0)
    assert shifted["token"].min() == 5
    if name == MINILM:  # absolute position embeddings: the positions change the attention itself
        plain = spectra.profile(model, alone, ignore_first=0)
        assert (shifted["entropy"].to_numpy() - plain["entropy"].to_numpy()).max() > 1e-3
    with pytest.raises(ValueError, match="position_ids"):
        spectra.profile(model, alone, position_ids=torch.arange(3)[None])


def test_padded_position_ids():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert padded_position_ids(mask).tolist() == [[1, 1, 0, 1, 2], [0, 1, 2, 1, 1], [0, 1, 2, 3, 4]]
    assert padded_position_ids(mask, 2).tolist() == [[1, 2], [1, 1], [3, 4]]


def test_models_are_embedded_zoo_ones():
    assert {"tiny-llama", "tiny-qwen3"} <= set(zoo.MODEL_NAMES)
    assert Path(zoo.minilm_path(), "config.json").is_file()


def test_probe_capture_with_position_ids_matches_unpadded(decoder):
    model, tok = decoder.model, decoder.tok
    ids, mask, alone = padded_batch(tok)
    n = alone.shape[1]
    padded = spectra.Probe(model, layers=[1], heads=[0], capture=("q", "k"))
    with padded, torch.no_grad():
        model(ids[1:2], attention_mask=mask[1:2], position_ids=padded_position_ids(mask[1:2]))
    single = spectra.Probe(model, layers=[1], heads=[0], capture=("q", "k"))
    with single, torch.no_grad():
        model(alone)
    for kind, head in (("q", 0), ("k", padded.kv_head(0))):
        a, b = padded.captured(1, head, kind), single.captured(1, head, kind)
        assert a.positions.tolist() == list(range(n)) == b.positions.tolist()
        torch.testing.assert_close(a.vectors, b.vectors, atol=2e-5, rtol=1e-4)


def test_scale_sweep_and_head_stats_take_position_ids(decoder):
    from spectra.interventions import scale_sweep

    model, tok = decoder.model, decoder.tok
    ids, mask, alone = padded_batch(tok)
    kw = {"heads": [(1, 0), (1, 3)], "alphas": [0.5, 1.0, 2.0]}
    for mode in ("local", "propagated"):
        table = scale_sweep(model, ids, attention_mask=mask, mode=mode, **kw)
        single = scale_sweep(model, alone, mode=mode, **kw)
        for sample in (1, 2):
            got = table[table["sample"] == sample].reset_index(drop=True)
            want = single.reset_index(drop=True)
            assert got["n_tokens"].tolist() == want["n_tokens"].tolist()
            np.testing.assert_allclose(got["entropy"], want["entropy"], atol=2e-5, rtol=1e-4)
        given = scale_sweep(model, ids, attention_mask=mask, position_ids=padded_position_ids(mask), mode=mode, **kw)
        np.testing.assert_allclose(given["entropy"], table["entropy"], atol=1e-6)
    a = spectra.head_stats(model, alone, n_random=2, random_block=8, ignore_first=0)
    b = spectra.head_stats(
        model, alone, n_random=2, random_block=8, ignore_first=0, position_ids=torch.arange(alone.shape[1])
    )
    np.testing.assert_allclose(a["entropy_mean"], b["entropy_mean"], atol=1e-6)
    shifted = spectra.head_stats(
        model, alone, n_random=2, random_block=8, ignore_first=3, position_ids=torch.arange(alone.shape[1]) + 3
    )
    assert (
        shifted["entropy_mean"]
        - spectra.head_stats(model, alone, n_random=2, random_block=8, ignore_first=0)["entropy_mean"]
    ).abs().max() > 0


def test_intervention_checks_take_left_padded_inputs(decoder):
    model, tok = decoder.model, decoder.tok
    ids, mask, _ = padded_batch(tok)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": padded_position_ids(mask)}
    assert spectra.check_baseline(model, inputs).logits_equal
    spectra.check_isolation(model, spectra.ScaleQuery(1, 0, 2.0), inputs)  # raises on a violation
