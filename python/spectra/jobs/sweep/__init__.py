"""The ``sweep`` job kind: :mod:`~spectra.jobs.sweep.run` (single machine) and :mod:`~spectra.jobs.sweep.kind` (engines)."""
