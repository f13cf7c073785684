"""Pure-PyTorch twins of every native op: the readable specification each kernel is tested against.

They materialise whatever is convenient and are meant for small inputs and for tests.
"""

from spectra.reference.vec_stats import vec_stats

__all__ = ["vec_stats"]
