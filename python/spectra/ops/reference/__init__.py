"""Pure-PyTorch twins of every native op: the readable specification each kernel is tested against.

They materialise whatever is convenient and are meant for small inputs and for tests.
"""

from spectra.ops.reference.attn_row_stats import attn_row_stats, visible_keys
from spectra.ops.reference.effective_rank import effective_rank
from spectra.ops.reference.plasticity import pairwise as plasticity_pairwise  # twin of spectra.plasticity.pairwise
from spectra.ops.reference.vec_stats import vec_stats

__all__ = ["attn_row_stats", "effective_rank", "plasticity_pairwise", "vec_stats", "visible_keys"]
