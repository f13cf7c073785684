"""Capturing q/k/v of a bfloat16 and a float16 model on the CPU: float32 vectors, finite, close to the
float32 model's (relative to their norms), with the same rows."""

from __future__ import annotations

import pytest
import torch

from spectra.capture.store import read_capture
from spectra.jobs.capture.run import run_capture
from spectra.models.loading import load_model

EXAMPLES = [(0, "In the beginning God created the heaven and the earth."), (1, "And the earth was without form.")]


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> dict[str, object]:
    folders = {}
    for dtype in ("float32", "bfloat16", "float16"):
        model, tokenizer = load_model("tiny-llama", dtype=dtype, device="cpu")
        folders[dtype] = tmp_path_factory.mktemp(dtype)
        run_capture(
            model,
            tokenizer,
            EXAMPLES,
            folders[dtype],
            layers=[0, 3],
            heads=[0, 5],
            capture=("q", "k", "v"),
            stage=("post_rope", "pre_rope"),
            progress=False,
        )
    return folders


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_half_precision_captures_are_float32_finite_and_close_to_float32(captures, dtype, kind):
    head = 5 if kind == "q" else 1  # k and v are captured per KV head (query head 5 reads KV head 1)
    for layer in (0, 3):
        for stage in ("post_rope", "pre_rope"):
            full = read_capture(captures["float32"], layer, head, kind, stage)
            half = read_capture(captures[dtype], layer, head, kind, stage)
            assert half.vectors.dtype == torch.float32 and torch.isfinite(half.vectors).all()
            assert torch.equal(half.positions, full.positions) and torch.equal(half.example_ids, full.example_ids)
            error = (half.vectors - full.vectors).norm(dim=1) / full.vectors.norm(dim=1).clamp_min(1e-3)
            assert error.max() < 0.1, (layer, stage, float(error.max()))
