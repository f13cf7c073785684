"""Helpers for tests of Spectra and of users' own kernels: the 2x-error tolerance rule
(:mod:`~spectra.testing.tolerance`) and in-process peak-memory measurement
(:mod:`~spectra.testing.benchmarking`)."""

from spectra.testing.tolerance import (
    FLOAT_DTYPES,
    PNG_MAGIC,
    assert_png_written,
    assert_within_2x_reference,
    devices,
)

__all__ = ["FLOAT_DTYPES", "PNG_MAGIC", "assert_png_written", "assert_within_2x_reference", "devices"]
