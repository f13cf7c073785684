"""Spectra: mechanistic analysis of attention heads in HuggingFace transformers models.

Heavy math runs in the native core ``spectra._core`` (``torch.ops.spectra.*`` ops and pybind11
accumulators); this package is the thin Python layer around it, in layers that only import
downwards (see docs/architecture.md):

====================  ===========================================================================
``spectra.cli``       the ``spectra`` command line
``report``/``figures``  the HTML report and the figures of every analysis
``jobs``/``engine``   one declaration per job kind; its runs in-process or on Ray
``metrics`` ...       the analyses: ``metrics``, ``interventions``, ``heads``, ``geometry``, ``plasticity``
``capture``           the attention switch, ``Probe`` and capture folders
``models``/``data``   architecture adapters, model loading and devices; the embedded zoo
``ops``               typed front ends of the native ops and their pure-PyTorch twins
``io``                atomic writes, identities and hashes
====================  ===========================================================================

``import spectra`` is light: it imports neither torch nor transformers. Every name below (and
every subpackage) is loaded on first use.

Example:
    >>> import torch, spectra
    >>> spectra.vec_stats(torch.ones(2, 4)).participation_ratio.tolist()
    [4.0, 4.0]
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

from spectra._native import NativeModuleError as NativeModuleError  # re-exported

try:
    __version__ = importlib.metadata.version("spectra-attention")
except importlib.metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"

#: Public names and the module that defines each.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["HookRegistry", "PositionSampler", "RunningMoments", "SecondMoments"], "spectra.ops"),
    **dict.fromkeys(["AttnRowStats", "VecStats", "attn_row_stats", "vec_stats"], "spectra.ops.native"),
    "backend": "spectra.ops.backend",
    **dict.fromkeys(["Captured", "read_capture", "read_sidecar"], "spectra.capture.store"),
    "Probe": "spectra.capture.probe",
    **dict.fromkeys(["HeadGeometry", "head_geometry"], "spectra.heads.head_geometry"),
    "head_stats": "spectra.heads.stats",
    **dict.fromkeys(
        [
            "AblateHead",
            "HeadOutputs",
            "InterventionNotReachedError",
            "OutputRecorder",
            "PatchHead",
            "ScaleKey",
            "ScaleLogits",
            "ScaleQuery",
            "intervene",
            "kv_group",
            "record_head_outputs",
        ],
        "spectra.interventions.context",
    ),
    **dict.fromkeys(
        ["BaselineReport", "InterventionCheckError", "IsolationReport", "check_baseline", "check_isolation"],
        "spectra.interventions.checks",
    ),
    **dict.fromkeys(["SUPPORTED_MODEL_TYPES", "UnsupportedModelError"], "spectra.models"),
    **dict.fromkeys(["NonFiniteActivationError", "profile"], "spectra.metrics.profile"),
}

#: Subpackages reachable as attributes (``spectra.geometry.combined_pca``), imported on first use.
_SUBPACKAGES = (
    "capture",
    "cli",
    "data",
    "engine",
    "figures",
    "geometry",
    "heads",
    "info",
    "interventions",
    "io",
    "jobs",
    "metrics",
    "models",
    "ops",
    "plasticity",
    "report",
    "testing",
)

#: Short names of modules that users reach as ``spectra.<name>`` (``spectra.stats.head_stats``,
#: ``spectra.taxonomy.classify``, ``from spectra import zoo``).
_ALIASES: dict[str, str] = {
    "zoo": "spectra.models.zoo",
    "stats": "spectra.heads.stats",
    "taxonomy": "spectra.heads.taxonomy",
    "dynamics": "spectra.heads.dynamics",
    "reference": "spectra.ops.reference",
    "experiments": "spectra.interventions",
}

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES, *_ALIASES, "NativeModuleError", "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _ALIASES:
        value = importlib.import_module(_ALIASES[name])
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"spectra.{name}")
    else:
        raise AttributeError(f"module 'spectra' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from spectra import (  # noqa: F401
        capture,
        data,
        engine,
        figures,
        geometry,
        heads,
        interventions,
        io,
        jobs,
        metrics,
        models,
        ops,
        plasticity,
        report,
        testing,
    )
    from spectra.capture.probe import Probe  # noqa: F401
    from spectra.capture.store import Captured, read_capture, read_sidecar  # noqa: F401
    from spectra.heads.head_geometry import HeadGeometry, head_geometry  # noqa: F401
    from spectra.heads.stats import head_stats  # noqa: F401
    from spectra.interventions.checks import (  # noqa: F401
        BaselineReport,
        InterventionCheckError,
        IsolationReport,
        check_baseline,
        check_isolation,
    )
    from spectra.interventions.context import (  # noqa: F401
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
    from spectra.metrics.profile import NonFiniteActivationError, profile  # noqa: F401
    from spectra.models import SUPPORTED_MODEL_TYPES, UnsupportedModelError  # noqa: F401
    from spectra.ops import HookRegistry, PositionSampler, RunningMoments, SecondMoments  # noqa: F401
    from spectra.ops.backend import backend  # noqa: F401
    from spectra.ops.native import AttnRowStats, VecStats, attn_row_stats, vec_stats  # noqa: F401
