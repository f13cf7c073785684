"""Spectra: mechanistic analysis of attention heads in HuggingFace transformers models.

Heavy math runs in the native core ``spectra._core`` (``torch.ops.spectra.*`` ops and pybind11
accumulators); this package is the thin Python layer around it.

Example:
    >>> import torch, spectra
    >>> spectra.vec_stats(torch.ones(2, 4)).participation_ratio.tolist()
    [4.0, 4.0]
"""

from __future__ import annotations

import importlib.metadata

from spectra._native import NativeModuleError, load_core

try:
    __version__ = importlib.metadata.version("spectra-attention")
except importlib.metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"

_core = load_core()

if _core is not None:
    from spectra._core import HookRegistry, PositionSampler, RunningMoments, SecondMoments
    from spectra._ops import AttnRowStats, VecStats, attn_row_stats, vec_stats
    from spectra.capture_store import Captured, read_capture, read_sidecar
    from spectra.head_geometry import HeadGeometry, head_geometry
    from spectra.intervene import (
        AblateHead,
        HeadOutputs,
        InterventionNotReachedError,
        OutputRecorder,
        PatchHead,
        ScaleKey,
        ScaleLogits,
        ScaleQuery,
        intervene,
        kv_group,
        record_head_outputs,
    )
    from spectra.intervention_checks import (
        BaselineReport,
        InterventionCheckError,
        IsolationReport,
        check_baseline,
        check_isolation,
    )
    from spectra.models import SUPPORTED_MODEL_TYPES, UnsupportedModelError
    from spectra.probe import Probe
    from spectra.profile import NonFiniteActivationError, profile
    from spectra import dynamics, stats, taxonomy  # spectra.stats.head_stats, spectra.taxonomy.classify, ...
    from spectra.stats import head_stats

    __all__ = [
        "SUPPORTED_MODEL_TYPES",
        "AblateHead",
        "BaselineReport",
        "HeadOutputs",
        "InterventionCheckError",
        "InterventionNotReachedError",
        "IsolationReport",
        "OutputRecorder",
        "PatchHead",
        "ScaleKey",
        "ScaleLogits",
        "ScaleQuery",
        "check_baseline",
        "check_isolation",
        "intervene",
        "kv_group",
        "record_head_outputs",
        "AttnRowStats",
        "attn_row_stats",
        "Captured",
        "HeadGeometry",
        "HookRegistry",
        "NativeModuleError",
        "PositionSampler",
        "NonFiniteActivationError",
        "Probe",
        "profile",
        "RunningMoments",
        "SecondMoments",
        "UnsupportedModelError",
        "read_capture",
        "read_sidecar",
        "VecStats",
        "__version__",
        "head_geometry",
        "head_stats",
        "dynamics",
        "stats",
        "taxonomy",
        "vec_stats",
    ]
