"""Heads: per-head statistics (:mod:`~spectra.heads.stats`), the head taxonomy
(:mod:`~spectra.heads.taxonomy`) and how both move over training (:mod:`~spectra.heads.dynamics`)."""
