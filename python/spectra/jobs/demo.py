"""The main job on the embedded default model: ``make demo`` / ``spectra demo``.

Profiles ``tiny-llama`` on the corpus' held-out text with the profile job (``spectra profile``)
into ``results/demo/``, then prints where the figures are and a short per-layer summary.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd

from spectra import defaults
from spectra.data.windows import load_windows
from spectra.jobs.profile.run import META, ProfileResult, run_profile
from spectra.models.loading import load_model
from spectra.report.html import write_report

SUMMARY_METRICS = ("entropy", "max_attn", "k_eff", "sink_mass")


def print_result(result: ProfileResult) -> None:
    """Where the result folder and figures are, exp0's verdict, and the per-layer means."""
    out = result.out_dir
    skipped = len(result.shards) - len(result.computed_shards)
    print(f"results: {out}/ ({len(result.shards)} token shards" + (f", {skipped} reused" if skipped else "") + ")")
    print("figures:")
    for path in result.figures:
        print(f"  {path}")
    exp0 = result.summary.get("exp0")
    if exp0:
        control = exp0["randomization_control"]["pooled"]
        print(
            f"exp0 (q_norm vs entropy): {exp0['n_significant']}/{exp0['n_heads']} heads significant "
            f"({exp0['fraction_significant']:.0%}); randomisation control mean |r| {control['mean_abs']:.3f} "
            f"({'passes' if control['passes'] else 'FAILS'}); verdict {result.summary['verdict']}"
        )
    print("per-layer means (over heads, samples and tokens):")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(result.layer_summary.to_string(index=False))


def run_demo(
    model: str = "tiny-llama",
    *,
    context_length: int = 256,
    n_samples: int = 16,
    batch_size: int = 4,
    out_dir: str | Path = "results/demo",
    add_special_tokens: bool = True,
    progress: bool = True,
    dtype: str = defaults.DTYPE,
    device: str | None = None,
    attn_implementation: str = defaults.ATTN_IMPLEMENTATION,
) -> ProfileResult:
    """Profiles ``model`` (loaded in ``dtype`` on ``device``, default float32 on the CPU, with ``attn_implementation``) on the held-out
    text into ``out_dir`` (a previous result folder there is
    replaced), prints where the figures are and a per-layer summary, writes ``<out_dir>/report.html``
    (``spectra.report``) and returns the result.

    Example:
        >>> import tempfile
        >>> result = run_demo(context_length=64, n_samples=2, out_dir=tempfile.mkdtemp(), progress=False)
        ... # doctest: +ELLIPSIS
        spectra demo: tiny-llama ...
        per-layer means (over heads, samples and tokens):
         layer  entropy  max_attn  k_eff  sink_mass
             0 ...
        >>> sorted(p.name for p in result.figures)[-1]
        'head_sink_mass.png'
    """
    out = Path(out_dir)
    if (out / META).is_file():
        json.loads((out / META).read_text())  # only ever replace what looks like a result folder
        shutil.rmtree(out)
    loaded, tokenizer = load_model(model, dtype=dtype, device=device, attn_implementation=attn_implementation)
    windows = load_windows(None, tokenizer, context_length, n_samples, add_special_tokens=add_special_tokens)
    config = loaded.config
    print(
        f"spectra demo: {model} ({config.num_hidden_layers} layers, {config.num_attention_heads} query heads); "
        f"held-out text: {len(windows)} windows x {context_length} tokens, batch {batch_size}"
    )
    start = time.perf_counter()
    result = run_profile(
        loaded,
        tokenizer,
        windows,
        out,
        model_name=model,
        batch_size=batch_size,
        data=None,
        n_samples=n_samples,
        add_special_tokens=add_special_tokens,
        progress=progress,
        command_line=[
            "spectra",
            "demo",
            "--model",
            model,
            "--context-length",
            str(context_length),
            "--n-samples",
            str(n_samples),
            "--batch-size",
            str(batch_size),
            "--out",
            str(out),
            *([] if add_special_tokens else ["--no-add-special-tokens"]),
            *(["--dtype", str(dtype)] if dtype != defaults.DTYPE else []),
            *(["--device", str(device)] if device is not None else []),
            *(
                ["--attn-implementation", attn_implementation]
                if attn_implementation != defaults.ATTN_IMPLEMENTATION
                else []
            ),
        ],
    )
    seconds = time.perf_counter() - start
    print_result(result)
    print(f"{len(windows) * context_length} tokens profiled and analysed in {seconds:.1f} s")

    print(f"report: {write_report(out, dtype=dtype, device=device, attn_implementation=attn_implementation)}")
    return result
