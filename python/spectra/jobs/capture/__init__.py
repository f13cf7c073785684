"""The ``capture`` job kind: :mod:`~spectra.jobs.capture.run` (single machine) and :mod:`~spectra.jobs.capture.kind` (engines)."""
