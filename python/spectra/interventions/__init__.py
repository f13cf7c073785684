"""Interventions on single heads inside the model's own forward pass, their verification, and the
experiments built from them.

- :mod:`~spectra.interventions.specs` — what each intervention scales or replaces (values);
- :mod:`~spectra.interventions.context` — ``intervene(model, ...)``, the context that applies them;
- :mod:`~spectra.interventions.checks` — ``check_baseline`` / ``check_isolation`` on real forward passes;
- :func:`scale_sweep` — a head's metrics as its logits are scaled (exp1, exp2b, exp3, exp3b), in
  ``local`` or ``propagated`` mode;
- :mod:`~spectra.interventions.gain` — gain fits, the global gain map and its categories (exp2, exp2b);
- :mod:`~spectra.interventions.qk_asymmetry` — Q-vs-K scaling (exp3, exp3b).
"""

from spectra.interventions.scale_sweep import DEFAULT_ALPHAS, KINDS, MODES, scale_sweep

__all__ = ["DEFAULT_ALPHAS", "KINDS", "MODES", "scale_sweep"]
