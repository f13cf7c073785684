"""The ``geometry`` job kind: :mod:`~spectra.jobs.geometry.run` (single machine) and :mod:`~spectra.jobs.geometry.kind` (engines)."""
