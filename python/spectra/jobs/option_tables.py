"""The options of every job kind in one mapping, and the Markdown tables of them that
docs/distributed.md holds between ``<!-- options:<kind>:begin -->`` / ``end`` markers (a test
compares them; paste :func:`markdown` there after changing an option).

Example:
    >>> print(markdown("dynamics").splitlines()[2])
    | `--checkpoints` |  |  | Checkpoint folders of one model (repeat the option); named step-N / checkpoint-N or with trainer_state.json. |
"""

from __future__ import annotations

from spectra.jobs.capture.options import OPTIONS as CAPTURE
from spectra.jobs.dynamics.options import OPTIONS as DYNAMICS
from spectra.jobs.geometry.options import OPTIONS as GEOMETRY
from spectra.jobs.options import Option, table
from spectra.jobs.plasticity.options import OPTIONS as PLASTICITY
from spectra.jobs.profile.options import OPTIONS as PROFILE

__all__ = ["KIND_OPTIONS", "markdown"]

#: ``kind -> its options`` (sweep's run-config keys are the fields of ``SweepConfig``; see docs/interventions.md).
KIND_OPTIONS: dict[str, tuple[Option, ...]] = {
    "profile": PROFILE,
    "capture": CAPTURE,
    "dynamics": DYNAMICS,
    "geometry": GEOMETRY,
    "plasticity": PLASTICITY,
}


def markdown(kind: str) -> str:
    """The Markdown table of a kind's options: the ``spectra <kind>`` option, the run-config key, the default."""
    return table(KIND_OPTIONS[kind])
