"""The engine: a job run as independent tasks, in-process or on a Ray cluster (``spectra run``).

:mod:`~spectra.engine.core` holds the tasks, the local and Ray engines and the run configs; the
job kinds it runs are declared in :mod:`spectra.jobs`.
"""

from spectra.engine.core import *  # noqa: F403
from spectra.engine.core import __all__  # noqa: F401
