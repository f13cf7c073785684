"""Helpers shared by Spectra's tests (and usable by anyone validating a kernel of their own).

The tolerance rule is FlashAttention's: against a float64 truth, a kernel may err at most twice as
much as the same computation done by the pure-PyTorch reference in the kernel's output precision,
plus a floor of a few output ulps for the final rounding. No hand-tuned atol per test.
"""

from __future__ import annotations

from pathlib import Path

import torch

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def devices(op: str) -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when a GPU is visible and ``torch.ops.spectra.<op>`` runs there (a
    linked CUDA kernel or, where none is, the torch path that ``spectra.ops`` registers for CUDA).

    Example:
        >>> devices("vec_stats")[0]
        'cpu'
    """
    import spectra.ops  # noqa: F401  (loads the ops and their CUDA entries before the dispatcher is asked)

    found = ["cpu"]
    if torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key(f"spectra::{op}", "CUDA"):
        found.append("cuda")
    return found


def assert_within_2x_reference(
    kernel: torch.Tensor,
    reference: torch.Tensor,
    truth: torch.Tensor,
    *,
    name: str = "output",
    ulps: float = 4.0,
    scale: float = 0.0,
) -> None:
    """Asserts ``|kernel - truth| <= 2·|reference - truth| + ulps·eps(kernel.dtype)·max(|truth|, scale)``.

    ``scale`` is the magnitude the output's rounding error is relative to when it is not the output
    itself: an entropy computed as ``ln Z − E[s]`` errs relative to its terms (order 1 nat), not to a
    tiny result.

    NaNs must coincide exactly between kernel and truth.

    Example:
        >>> import torch
        >>> t = torch.tensor([1.0], dtype=torch.float64)
        >>> assert_within_2x_reference(t.float(), t.float(), t)
    """
    truth = truth.to(torch.float64).cpu()
    kernel64 = kernel.to(torch.float64).cpu()
    reference64 = reference.to(torch.float64).cpu()
    nan_truth = torch.isnan(truth)
    mismatched = nan_truth != torch.isnan(kernel64)
    if mismatched.any():
        raise AssertionError(f"{name}: NaN pattern differs from the truth at {mismatched.nonzero()[:5].tolist()}")
    finite = ~nan_truth
    err_kernel = (kernel64 - truth).abs()[finite]
    err_reference = (reference64 - truth).abs()[finite]
    info = torch.finfo(kernel.dtype)
    # ulps of the value, and never less than ulps of the subnormal spacing (smallest_normal · eps).
    floor = ulps * info.eps * (truth.abs()[finite].clamp(min=scale) + info.smallest_normal)
    bad = err_kernel > 2 * err_reference + floor
    if bad.any():
        i = bad.nonzero()[0].item()
        raise AssertionError(
            f"{name}: kernel error {err_kernel[i].item():.3e} exceeds 2x reference error "
            f"{err_reference[i].item():.3e} + floor {floor[i].item():.3e} (truth {truth[finite][i].item():.6e}); "
            f"{int(bad.sum())} of {bad.numel()} elements"
        )


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png_written(path, folder) -> None:
    """A figure function's output: a real, non-trivial PNG at ``path``, and no temporary or hidden
    file left behind in ``folder`` (figures are written atomically)."""

    from matplotlib.image import imread

    path, folder = Path(path), Path(folder)
    assert path.is_file()
    assert path.stat().st_size > 1000
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 100 and image.shape[1] > 100
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []


def assert_row_stats_within_2x(
    out, same, truth, names, *, ulps: float, unit_scale: tuple[str, ...] = ("entropy", "entropy_normalized")
) -> None:
    """:func:`assert_within_2x_reference` for each of ``names`` among the real outputs of
    ``attn_row_stats`` (kernel ``out``, reference in the output precision ``same``, float64 ``truth``);
    the outputs in ``unit_scale`` err relative to O(1) terms (an entropy is ``ln Z − E[s]``).

    Example:
        >>> import torch, spectra
        >>> from spectra import reference
        >>> g = torch.Generator().manual_seed(0)
        >>> q, k = torch.randn(1, 2, 5, 4, generator=g), torch.randn(1, 2, 5, 4, generator=g)
        >>> runs = [reference.attn_row_stats(q, k, compute_dtype=dtype) for dtype in (None, torch.float64)]
        >>> assert_row_stats_within_2x(spectra.attn_row_stats(q, k), *runs, ["entropy", "max_attn"], ulps=16)
    """
    for name in names:
        assert_within_2x_reference(
            getattr(out, name),
            getattr(same, name),
            getattr(truth, name),
            name=name,
            ulps=ulps,
            scale=1.0 if name in unit_scale else 0.0,
        )


def assert_k_eff_within_ties(
    k_eff: torch.Tensor, cumulative: torch.Tensor, threshold: float, rows: torch.Tensor
) -> None:
    """``k_eff`` (...) against the float64 sorted cumulative masses ``cumulative`` (..., n) of each row's
    outcomes: on ``rows``, the first ``k_eff`` outcomes reach ``threshold − 1e-6`` within rounding
    (1e-5) and the first ``k_eff − 1`` do not clearly reach it (the op's tie rule).

    Example:
        >>> import torch
        >>> cumulative = torch.tensor([[0.6, 0.9, 1.0]], dtype=torch.float64)
        >>> assert_k_eff_within_ties(torch.tensor([2]), cumulative, 0.9, torch.tensor([True]))
    """
    target = threshold - 1e-6
    index = (k_eff - 1).clamp(min=0)
    reached = cumulative.gather(-1, index.unsqueeze(-1)).squeeze(-1) >= target - 1e-5
    before = torch.where(
        k_eff >= 2,
        cumulative.gather(-1, (k_eff - 2).clamp(min=0).unsqueeze(-1)).squeeze(-1),
        torch.full_like(reached, -1.0, dtype=torch.float64),
    )
    not_early = before < target + 1e-5
    assert bool((reached & not_early)[rows].all()), "k_eff outside the tie band of the float64 truth"
