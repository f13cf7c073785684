"""Ops: a typed Python front end for every native op (``torch.ops.spectra.*`` and the pybind11
classes and functions of ``spectra._core``); in :mod:`spectra.ops.torch_path`, every tensor op in
plain torch for devices without a validated kernel (chosen by :mod:`spectra.ops.backend`); and in
:mod:`spectra.ops.reference`, their float64 pure-PyTorch twins.

The lowest Python layer above the native core: everything else reaches the native code through
here, so the core is loaded in one place (torch first, then the extension that links against it;
a missing build raises :class:`spectra.NativeModuleError` with the command that builds it).
"""

from spectra._native import load_core

_core = load_core()

from spectra._core import HookRegistry, PositionSampler, RunningMoments, SecondMoments  # noqa: E402
from spectra.ops import fakes  # noqa: E402,F401  (the torch path's dispatcher entries and every fake kernel)
from spectra.ops.native import (  # noqa: E402
    AttnRowStats,
    PairwisePlasticity,
    VecStats,
    attn_row_stats,
    plasticity_pairwise,
    vec_stats,
)

__all__ = [
    "AttnRowStats",
    "HookRegistry",
    "PairwisePlasticity",
    "PositionSampler",
    "RunningMoments",
    "SecondMoments",
    "VecStats",
    "attn_row_stats",
    "plasticity_pairwise",
    "vec_stats",
]
