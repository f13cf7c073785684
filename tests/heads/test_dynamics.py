"""spectra.dynamics: series over the embedded tiny-qwen3 checkpoints, architecture checks, and the
live tracker leaving training bitwise unchanged."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import spectra
from spectra.heads import dynamics
from spectra.models import zoo
from spectra.models.random_init import VOCAB_SIZE, tiny_model

SMALL = {"context_length": 48, "n_samples": 2, "n_random": 2, "random_block": 8}


@pytest.fixture(scope="module")
def qwen3_series() -> dynamics.Dynamics:
    return dynamics.track("tiny-qwen3", **SMALL)


def test_series_over_the_embedded_checkpoints(qwen3_series):
    d = qwen3_series
    assert d.steps == sorted(d.steps) and d.steps[0] == 0 and len(d.steps) == len(zoo.checkpoint_paths("tiny-qwen3"))
    n_layers, n_heads, n_kv = 4, 8, 2
    for frame, per_step in ((d.head_series, n_layers * n_heads), (d.kv_series, n_layers * n_kv)):
        counts = frame.groupby(["step", "stat"]).size()
        assert (counts == per_step).all()
        assert frame["value"].notna().any()
    assert list(d.taxonomy.groupby("step").size()) == [n_layers * n_heads] * len(d.steps)
    assert set(d.gamma["head"]) == {-1} and d.gamma.groupby("step").size().eq(n_layers * 32).all()
    # Step 0 is the random init: RMSNorm's gain starts at exactly 1.
    assert (d.gamma[d.gamma["step"] == 0]["gamma"] == 1.0).all()
    assert not (d.gamma[d.gamma["step"] == d.steps[-1]]["gamma"] == 1.0).all()
    # The series agrees with head_stats on the same checkpoint.
    model, tok = zoo.load(zoo.checkpoint_paths("tiny-qwen3")[2])
    from spectra.data.windows import load_windows

    stats = spectra.head_stats(model, load_windows(None, tok, 48, 2), n_random=2, random_block=8)
    got = d.head_series[(d.head_series["step"] == 200) & (d.head_series["stat"] == "entropy_mean")]
    assert got.sort_values(["layer", "head"])["value"].tolist() == pytest.approx(stats["entropy_mean"].tolist())


def test_checkpoints_of_another_architecture_are_refused(tmp_path):
    first = zoo.checkpoint_paths("tiny-qwen3")[0]
    other = shutil.copytree(zoo.model_path("tiny-llama"), tmp_path / "step-000050")
    with pytest.raises(ValueError, match="another architecture.*model_type"):
        dynamics.track([first, other], **SMALL)
    with pytest.raises(ValueError, match="step"):
        shutil.copytree(first, tmp_path / "unnamed")
        dynamics.track([tmp_path / "unnamed"], **SMALL)
    with pytest.raises(ValueError, match="not a model folder"):
        dynamics.track([tmp_path], **SMALL)
    with pytest.raises(ValueError, match="empty"):
        dynamics.track([], **SMALL)
    with pytest.raises(ValueError, match="ships no training checkpoints"):
        dynamics.track("tiny-llama", **SMALL)


def test_gamma_needs_qk_norm():
    with pytest.raises(ValueError, match="has no QK-norm"):
        dynamics.gamma_table(tiny_model("llama", "sdpa"), required=True)
    assert dynamics.gamma_table(tiny_model("llama", "sdpa")).empty
    per_layer = dynamics.gamma_table(tiny_model("qwen3", "sdpa"))
    assert per_layer.groupby("layer").size().tolist() == [24, 24]


def _train(model, steps: int, tracker=None) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        ids = torch.randint(3, VOCAB_SIZE, (2, 12), generator=gen)
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        if tracker is not None:
            tracker.step()


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_live_tracker_leaves_training_bitwise_identical(family):
    plain = tiny_model(family, "eager").train()
    tracked = tiny_model(family, "eager").train()
    _train(plain, 5)
    with dynamics.KeyTracker(tracked, every=2) as tracker:
        _train(tracked, 5, tracker)
    for (name, a), (_, b) in zip(plain.named_parameters(), tracked.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    series = tracker.kv_series()
    assert sorted(series["step"].unique().tolist()) == [0, 2, 4]
    assert set(series["stat"]) == {
        "k_norm_mean",
        "k_norm_std",
        "k_max_abs_mean",
        "k_participation_ratio_mean",
        "k_one_hotness_mean",
    }
    assert len(series) == 3 * 2 * 2 * 5  # steps x layers x KV heads x stats
    gamma = tracker.gamma()
    assert gamma.empty if family == "llama" else sorted(gamma["step"].unique().tolist()) == [0, 2, 4]
    assert all(not m._forward_hooks for m in tracked.modules())  # hooks removed on exit


def test_callback_follows_the_trainer_steps():
    model = tiny_model("qwen3", "eager").train()
    callback = dynamics.KeyTrackerCallback(every=3)
    state = SimpleNamespace(global_step=0)
    callback.on_train_begin(None, state, None, model=model)
    ids = torch.randint(3, VOCAB_SIZE, (1, 8))
    for step in range(1, 7):
        model(ids)
        state.global_step = step
        callback.on_step_end(None, state, None)
    callback.on_train_end(None, state, None)
    assert sorted(callback.tracker.kv_series()["step"].unique().tolist()) == [0, 3]
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="every"):
        dynamics.KeyTracker(model, every=0)


def test_checkpoint_step_names():
    assert dynamics.checkpoint_step("a/step-000100") == 100
    assert dynamics.checkpoint_step("a/checkpoint-25") == 25
    with pytest.raises(ValueError, match="training step"):
        dynamics.checkpoint_step("a/final")
    assert isinstance(pd.DataFrame(), pd.DataFrame)
