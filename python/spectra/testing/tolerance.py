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
