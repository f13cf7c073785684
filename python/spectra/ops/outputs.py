"""The ops' result types, shared by the native front ends (:mod:`spectra.ops.native`), the torch path
(:mod:`spectra.ops.torch_path`) and the float64 twins (:mod:`spectra.ops.reference`)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class VecStats(NamedTuple):
    """Per-vector geometry over the last dimension; shapes are the input's leading dims."""

    norm: torch.Tensor
    max_abs: torch.Tensor
    participation_ratio: torch.Tensor


class AttnRowStats(NamedTuple):
    """Per-(batch, query head, query) statistics of an attention row over the keys it may see."""

    entropy: torch.Tensor  # nats
    entropy_normalized: torch.Tensor  # entropy / ln(n_visible); NaN when n_visible < 2
    max_attn: torch.Tensor
    argmax: torch.Tensor  # int64, first key of maximal weight; -1 when no key is visible
    k_eff: torch.Tensor  # int64, smallest count of keys whose mass reaches threshold - 1e-6
    sink_mass: torch.Tensor  # weight on key 0
    sink_mass_n: torch.Tensor  # weight on keys 0 .. n_sink - 1
    n_visible: torch.Tensor  # int64
    logit_var: (
        torch.Tensor
    )  # Var_p(logits) = -dH/d ln(alpha) when every logit is scaled by alpha (see docs/interventions.md, 'Gain')


class PairwisePlasticity(NamedTuple):
    """Per-pair logit-gap moments and plasticity of key differences under a Gaussian query; all (P,) float64."""

    m: torch.Tensor  # wᵀμ, the mean of the logit gap q·k1 − q·k2
    v: torch.Tensor  # wᵀΣw, its variance
    p: torch.Tensor  # Pr(q·k1 > q·k2) = Φ(m/√v)
    pp: torch.Tensor  # 4·p·(1−p), in [0, 1]
