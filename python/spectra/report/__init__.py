"""The self-contained HTML report of any result folder (``spectra report``)."""

from spectra.report.html import write_report

__all__ = ["write_report"]
