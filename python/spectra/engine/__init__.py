"""The engine: a job run as independent tasks, in-process or on a Ray cluster (``spectra run``).

:mod:`~spectra.engine.config` holds the run configs and their keys, :mod:`~spectra.engine.tasks`
the tasks and their stamped shards, :mod:`~spectra.engine.local` and :mod:`~spectra.engine.ray` the
engines, :mod:`~spectra.engine.runs` the staged run; :mod:`~spectra.engine.core` gathers their names
(and gives the overview). The job kinds it runs are declared in :mod:`spectra.jobs`.
"""

from spectra.engine.core import *  # noqa: F403
from spectra.engine.core import __all__  # noqa: F401
