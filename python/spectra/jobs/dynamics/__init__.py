"""The ``dynamics`` job kind: :mod:`~spectra.jobs.dynamics.run` (single machine) and :mod:`~spectra.jobs.dynamics.kind` (engines)."""
