"""The ``plasticity`` job kind: :mod:`~spectra.jobs.plasticity.run` (single machine) and :mod:`~spectra.jobs.plasticity.kind` (engines)."""
