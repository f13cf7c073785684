"""Spectra: mechanistic analysis of attention heads in HuggingFace transformers models.

Heavy math runs in the native core ``spectra._core`` (``torch.ops.spectra.*`` ops and pybind11
accumulators); this package is the thin Python layer around it.

Example:
    >>> import torch, spectra
    >>> spectra.vec_stats(torch.ones(2, 4)).participation_ratio.tolist()
    [4.0, 4.0]
"""

from __future__ import annotations

from spectra._native import NativeModuleError, load_core

__version__ = "0.1.0"

_core = load_core()

if _core is not None:
    from spectra._core import RunningMoments
    from spectra._ops import VecStats, vec_stats
    from spectra.head_geometry import HeadGeometry, head_geometry

    __all__ = [
        "HeadGeometry",
        "NativeModuleError",
        "RunningMoments",
        "VecStats",
        "__version__",
        "head_geometry",
        "vec_stats",
    ]
