"""Defaults shared by several commands, job kinds and analyses; a plain module of constants (it
imports nothing, so any layer may use it).

Example:
    >>> THRESHOLD, DTYPE, ATTN_IMPLEMENTATION
    (0.9, 'float32', 'sdpa')
"""

#: The attention mass that ``k_eff`` must reach.
THRESHOLD = 0.9
#: Tokens at the start of a window whose row metrics are NaN.
IGNORE_FIRST = 2
#: The per-token metrics of ``spectra profile`` (and ``kind: profile``).
METRICS = ("entropy", "entropy_normalized", "max_attn", "k_eff", "sink_mass", "q_norm", "k_norm")
#: Model weights' dtypes a model may be loaded in; the first is the default.
DTYPES = ("float32", "float16", "bfloat16")
DTYPE = DTYPES[0]
#: Attention implementations a model may be loaded with; the first is the default.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
ATTN_IMPLEMENTATION = ATTN_IMPLEMENTATIONS[0]
#: Where a task's model runs (``spectra run``).
DEVICES = ("cpu", "cuda")
DEVICE = DEVICES[0]
