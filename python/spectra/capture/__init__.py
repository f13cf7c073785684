"""Capture: Spectra's attention function inside the model's own forward pass.

:mod:`~spectra.capture.attention_switch` routes a model's attention through Spectra while a
context is active, :mod:`~spectra.capture.probe` records per-head Q/K/V (and row metrics) from
it, and :mod:`~spectra.capture.store` writes and reads capture folders.
"""
