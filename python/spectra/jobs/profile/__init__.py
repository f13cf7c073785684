"""The ``profile`` job kind: :mod:`~spectra.jobs.profile.run` (single machine) and :mod:`~spectra.jobs.profile.kind` (engines)."""
