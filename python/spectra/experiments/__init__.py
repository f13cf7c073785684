"""The seed experiments, composed from Spectra's capture, intervention and analysis layers.

- :func:`scale_sweep` — a head's metrics as its logits are scaled (exp1, exp2b, exp3, exp3b), in
  ``local`` or ``propagated`` mode;
- :mod:`~spectra.experiments.gain` — gain fits, the global gain map and its categories (exp2, exp2b);
- :mod:`~spectra.experiments.qk_asymmetry` — Q-vs-K scaling (exp3, exp3b);
- :mod:`~spectra.experiments.sweep_figures` — the seed's figures;
- :mod:`~spectra.experiments.sweep_job` — ``spectra sweep --config FILE.yaml``.
"""

from spectra.experiments.scale_sweep import DEFAULT_ALPHAS, KINDS, MODES, scale_sweep

__all__ = ["DEFAULT_ALPHAS", "KINDS", "MODES", "scale_sweep"]
