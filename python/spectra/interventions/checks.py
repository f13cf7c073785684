"""Verification of interventions on real forward passes (replacing the seed's fragile
isolation check and tautological sanity check; see docs/concepts.md, 'What the original code got wrong').

* :func:`check_baseline`: identity interventions (α = 1, a patch with the run's own output) give
  logits **bitwise** equal to the model without Spectra — multiplying by 1.0 is exact in IEEE
  arithmetic, so any difference is a bug in the plumbing.
* :func:`check_isolation`: one intervention, captured inside the intervened forward: upstream
  layers bitwise untouched; at the target layer every other head's Q and K and all of V bitwise
  equal to baseline; the target's **norm ratio** ‖x'‖/‖x‖ equal to the factor (relative 1e-6 in
  float32; the seed used an elementwise ratio that is unstable near 0 and NaN in fp16); exactly
  the expected heads' outputs changed (the whole GQA group for a key scale); and the downstream
  effect on the logits (KL, change in next-token loss) — or, for a model without a trained LM head
  (a bare encoder), the relative change of its last hidden state, under that name
  (:func:`hidden_change`), never a "KL" of softmaxed hidden states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from spectra.capture.forward import model_inputs, run_model
from spectra.capture.probe import Probe
from spectra.interventions.context import OutputRecorder, intervene, record_head_outputs
from spectra.interventions.specs import (
    INTERVENTION_TYPES,
    Intervention,
    PatchHead,
    ScaleKey,
    ScaleLogits,
    ScaleQuery,
)
from spectra.models import adapter_for

__all__ = [
    "BaselineReport",
    "InterventionCheckError",
    "IsolationReport",
    "check_baseline",
    "check_isolation",
    "logit_effect",
    "run_model",
    "hidden_change",
    "token_logit_effect",
]


class InterventionCheckError(AssertionError):
    """An isolation or baseline check failed; the message lists every violation."""


def _logits(output) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    return logits if logits is not None else output.last_hidden_state


def _real_tokens(inputs, output: torch.Tensor) -> torch.Tensor:
    """(B, T) bool on the CPU: the inputs' attention mask, or every token when there is none."""
    mask = model_inputs(inputs).get("attention_mask")
    return torch.ones(output.shape[:2], dtype=torch.bool) if mask is None else mask.to(torch.bool).cpu()


def _output_name(output) -> str:
    """``"logits"`` for a model with an LM head, ``"last_hidden_state"`` for a bare encoder."""
    return "logits" if getattr(output, "logits", None) is not None else "last_hidden_state"


def hidden_change(base: torch.Tensor, new: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per sample: the mean over its real tokens of ‖h_new − h_base‖ / ‖h_base‖ (float64, (B,)).

    The downstream effect of an intervention on a model without a trained LM head (a bare encoder),
    where a KL between softmaxes of hidden states would mean nothing.

    Example:
        >>> import torch
        >>> h = torch.ones(1, 2, 4)
        >>> hidden_change(h, 1.5 * h, torch.ones(1, 2, dtype=torch.bool)).tolist()
        [0.5]
    """
    base64, new64 = base.double().cpu(), new.double().cpu()
    ratio = (new64 - base64).norm(dim=-1) / base64.norm(dim=-1)
    v = valid.to(torch.float64).cpu()
    return (ratio.nan_to_num(posinf=0.0) * v).sum(-1) / v.sum(-1).clamp(min=1)


def token_logit_effect(
    base: torch.Tensor, new: torch.Tensor, ids: torch.Tensor | None, valid: torch.Tensor, causal: bool = True
):
    """Per token: KL(p_base ‖ p_new) (B, T), and, for next-token models, the next-token NLL under
    each (B, T−1) with the mask of (token, next token) pairs that are both real; (kl, None, None, None)
    otherwise. The shared core of :func:`logit_effect` and the sweeps' per-sample effects."""
    logp = torch.log_softmax(base.double().cpu(), -1)
    logq = torch.log_softmax(new.double().cpu(), -1)
    kl_tokens = (logp.exp() * (logp - logq)).sum(-1)
    if not causal or ids is None or ids.shape[1] < 2:
        return kl_tokens, None, None, None
    target = ids[:, 1:].cpu().unsqueeze(-1)
    nll_base = -logp[:, :-1].gather(-1, target).squeeze(-1)
    nll_new = -logq[:, :-1].gather(-1, target).squeeze(-1)
    return kl_tokens, nll_base, nll_new, valid[:, 1:] & valid[:, :-1]


def logit_effect(base: torch.Tensor, new: torch.Tensor, inputs, *, causal: bool = True) -> tuple[float, float]:
    """(mean KL(p_base ‖ p_new) over real tokens, next-token loss under ``new`` minus under ``base``).

    The loss is NaN for models that do not predict the next token (``causal=False``).
    """
    args = model_inputs(inputs)
    valid = _real_tokens(inputs, base)
    kl_tokens, nll_base, nll_new, pairs = token_logit_effect(base, new, args.get("input_ids"), valid, causal)
    kl = float(kl_tokens[valid].mean()) if bool(valid.any()) else math.nan
    if pairs is None or not bool(pairs.any()):
        return kl, math.nan
    return kl, float(nll_new[pairs].mean()) - float(nll_base[pairs].mean())


# ---- baseline ----


@dataclass
class BaselineReport:
    n_interventions: int
    logits_equal: bool
    max_abs_diff: float

    def __str__(self) -> str:
        verdict = "bitwise equal" if self.logits_equal else f"DIFFER (max |diff| {self.max_abs_diff:.3e})"
        return f"check_baseline: {self.n_interventions} identity interventions, logits {verdict}"


def identity_interventions(model: nn.Module, inputs) -> list[Intervention]:
    """α = 1 on every query head's Q, every KV head's K, head 0's logits of every layer, and a patch
    of head 0 of every layer with its own output on ``inputs``."""
    a = adapter_for(model)
    own = record_head_outputs(model, inputs, heads=[0])
    out: list[Intervention] = []
    for layer in range(a.n_layers):
        out += [ScaleQuery(layer, h, 1.0) for h in range(a.n_heads)]
        out += [ScaleKey(layer, g, 1.0) for g in range(a.n_kv_heads)]
        out += [ScaleLogits(layer, 0, 1.0), PatchHead(layer, 0, source=own)]
    return out


def check_baseline(model: nn.Module, inputs, interventions: Sequence[Intervention] | None = None) -> BaselineReport:
    """Identity interventions give logits bitwise equal to the model without Spectra; raises
    :class:`InterventionCheckError` otherwise.

    ``interventions`` default to :func:`identity_interventions` (every kind, every head). Given
    ones must be identities (α = 1; a patch with the same inputs' own output).

    Example:
        >>> import spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok("And God said, Let there be light: and there was light.", return_tensors="pt").input_ids
        >>> print(spectra.check_baseline(model, ids))
        check_baseline: 48 identity interventions, logits bitwise equal
    """
    if interventions is None:
        interventions = identity_interventions(model, inputs)
    else:
        for iv in interventions:
            if isinstance(iv, (ScaleQuery, ScaleKey, ScaleLogits)) and not iv.is_identity():
                raise ValueError(f"interventions: check_baseline takes identities (alpha=1); got {iv}")
            if not isinstance(iv, INTERVENTION_TYPES):
                raise TypeError(f"interventions: {iv!r} is not an intervention")
            if not isinstance(iv, (ScaleQuery, ScaleKey, ScaleLogits, PatchHead)):
                raise ValueError(f"interventions: {iv} is never an identity; check_baseline cannot use it")
    base = _logits(run_model(model, inputs))
    with intervene(model, *interventions):
        new = _logits(run_model(model, inputs))
    equal = base.shape == new.shape and torch.equal(base, new)
    diff = 0.0 if equal else float((base.double() - new.double()).abs().nan_to_num(math.inf).max())
    report = BaselineReport(len(interventions), equal, diff)
    if not equal:
        first = (base != new).nonzero()[0].tolist() if base.shape == new.shape else None
        raise InterventionCheckError(f"{report}; first differing logit at {first}")
    return report


# ---- isolation ----


@dataclass
class IsolationReport:
    intervention: str
    layer: int
    dtype: str
    expected_q_factors: dict[int, float]
    expected_k_factors: dict[int, float]
    q_norm_ratios: dict[int, float]
    k_norm_ratios: dict[int, float]
    rtol: float
    upstream_layers_equal: bool
    other_q_equal: bool
    other_k_equal: bool
    v_equal: bool
    expected_output_heads: tuple[int, ...]
    changed_output_heads: tuple[int, ...]
    kl_logits: float
    delta_loss: float
    logits_changed: bool
    failures: list[str] = field(default_factory=list)
    #: What the model outputs: "logits" (an LM head: kl_logits and delta_loss are defined) or
    #: "last_hidden_state" (a bare encoder: kl_logits and delta_loss are NaN, hidden_change is set).
    output: str = "logits"
    #: Mean over real tokens of ‖h' − h‖ / ‖h‖ of the last hidden state; NaN for models with logits.
    hidden_change: float = math.nan

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        def ratios(d: dict[int, float]) -> str:
            return ", ".join(f"{h}: {r:.9g}" for h, r in sorted(d.items())) or "-"

        lines = [
            f"check_isolation: {self.intervention} (layer {self.layer}, {self.dtype})",
            f"  upstream layers bitwise equal: {self.upstream_layers_equal}",
            f"  other heads' Q / K bitwise equal: {self.other_q_equal} / {self.other_k_equal}; V equal: {self.v_equal}",
            f"  Q norm ratios {{head: ratio}}: {ratios(self.q_norm_ratios)} (expected {ratios(self.expected_q_factors)})",
            f"  K norm ratios {{kv head: ratio}}: {ratios(self.k_norm_ratios)} (expected {ratios(self.expected_k_factors)})",
            f"  heads whose output changed: {list(self.changed_output_heads)} (expected {list(self.expected_output_heads)})",
            f"  downstream: KL(base || intervened) = {self.kl_logits:.6g} nats/token, delta loss = {self.delta_loss:.6g}"
            if self.output == "logits"
            else f"  downstream (no LM head): last hidden state changed by ||dh||/||h|| = {self.hidden_change:.6g} "
            "per real token",
        ]
        lines.append("  OK" if self.ok else "  FAILED:\n" + "\n".join(f"   - {f}" for f in self.failures))
        return "\n".join(lines)


def _captures(model: nn.Module, layers: list[int]):
    return Probe(model, layers=layers, capture=("q", "k", "v"), stage="post_rope")


def _norm_ratio(new: torch.Tensor, old: torch.Tensor) -> float:
    denominator = float(old.double().norm())
    return float(new.double().norm()) / denominator if denominator > 0 else math.nan


def check_isolation(
    model: nn.Module,
    intervention: Intervention,
    inputs,
    *,
    rtol: float | None = None,
    raise_on_failure: bool = True,
) -> IsolationReport:
    """Runs ``inputs`` without and with ``intervention`` and checks, on what the model computed:

    1. every layer before the target: Q, K, V bitwise equal;
    2. the target layer: Q of untouched query heads, K of untouched KV heads and all of V bitwise
       equal; each touched head's ‖x'‖/‖x‖ equal to its factor within ``rtol`` (default
       ``max(1e-6, eps(dtype))``);
    3. the attention outputs of exactly the expected heads changed: the target (and for a key or
       logit scale its whole GQA group), bitwise equal elsewhere;
    4. the logits changed (or stayed bitwise equal for an identity), reported as KL and Δloss.

    Returns an :class:`IsolationReport`; raises :class:`InterventionCheckError` listing every
    violation unless ``raise_on_failure=False``.

    Example:
        >>> import spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok("And God said, Let there be light: and there was light.", return_tensors="pt").input_ids
        >>> report = spectra.check_isolation(model, spectra.ScaleKey(layer=2, kv_head=1, alpha=2.0), ids)
        >>> report.ok, report.changed_output_heads, round(report.k_norm_ratios[1], 6)
        (True, (4, 5, 6, 7), 2.0)
    """
    if not isinstance(intervention, INTERVENTION_TYPES):
        raise TypeError(f"intervention: expected one intervention (ScaleQuery, ...); got {intervention!r}")
    a = adapter_for(model)
    intervention.check(a)
    layer = intervention.layer
    dtype = next(model.parameters()).dtype
    tol = rtol if rtol is not None else max(1e-6, torch.finfo(dtype).eps)
    layers = list(range(layer + 1))

    probe0, rec0 = _captures(model, layers), OutputRecorder(model, [layer])
    with probe0, rec0:
        base_output = run_model(model, inputs)
    probe1, rec1 = _captures(model, layers), OutputRecorder(model, [layer])
    with intervene(model, intervention), probe1, rec1:
        new = _logits(run_model(model, inputs))
    base, output = _logits(base_output), _output_name(base_output)

    failures: list[str] = []
    qf = intervention.q_factors(a.n_heads, a.n_kv_heads)
    kf = intervention.k_factors(a.n_heads, a.n_kv_heads)

    def rows(probe, at_layer: int, h: int, kind: str) -> torch.Tensor:
        return probe.captured(at_layer, h, kind).vectors

    upstream_equal = True
    for upstream in layers[:-1]:
        for kind, n in (("q", a.n_heads), ("k", a.n_kv_heads), ("v", a.n_kv_heads)):
            for h in range(n):
                if not torch.equal(rows(probe0, upstream, h, kind), rows(probe1, upstream, h, kind)):
                    upstream_equal = False
                    failures.append(f"upstream layer {upstream} {kind} head {h} changed")
    q_ratios, k_ratios = {}, {}
    other_q_equal = other_k_equal = v_equal = True
    for kind, n, factors, ratios in (("q", a.n_heads, qf, q_ratios), ("k", a.n_kv_heads, kf, k_ratios)):
        for h in range(n):
            old, new_rows = rows(probe0, layer, h, kind), rows(probe1, layer, h, kind)
            if h in factors:
                ratios[h] = _norm_ratio(new_rows, old)
                if not abs(ratios[h] / factors[h] - 1.0) <= tol:
                    failures.append(
                        f"{kind} head {h}: norm ratio {ratios[h]:.9g}, expected {factors[h]:.9g} (rtol {tol:g})"
                    )
            elif not torch.equal(old, new_rows):
                if kind == "q":
                    other_q_equal = False
                else:
                    other_k_equal = False
                failures.append(f"layer {layer} {kind} head {h} changed but is not targeted")
    for g in range(a.n_kv_heads):
        if not torch.equal(rows(probe0, layer, g, "v"), rows(probe1, layer, g, "v")):
            v_equal = False
            failures.append(f"layer {layer} v head {g} changed")

    identity = intervention.is_identity()
    touched = set(intervention.logit_factors(a.n_heads, a.n_kv_heads)) | set(intervention.output_heads())
    expected = () if identity else tuple(sorted(touched))
    out0, out1 = rec0.output(layer), rec1.output(layer)
    changed = tuple(h for h in range(a.n_heads) if not torch.equal(out0[:, :, h], out1[:, :, h]))
    if changed != expected:
        failures.append(f"heads whose output changed: {list(changed)}; expected exactly {list(expected)}")

    if output == "logits":
        kl, delta_loss = logit_effect(base, new, inputs, causal=a.family != "bert")
        change = math.nan
    else:  # a bare encoder: no distribution to take a KL of
        kl = delta_loss = math.nan
        valid = _real_tokens(inputs, base)
        per_sample = hidden_change(base, new, valid)
        change = float((per_sample * valid.sum(-1)).sum() / valid.sum().clamp(min=1))
    logits_changed = not torch.equal(base, new)
    if identity and logits_changed:
        failures.append(f"an identity intervention changed the {output}")
    if not identity and not logits_changed:
        failures.append(f"the {output} did not change: the intervention did not reach the model's output")

    report = IsolationReport(
        intervention=str(intervention),
        layer=layer,
        dtype=str(dtype).removeprefix("torch."),
        expected_q_factors=qf,
        expected_k_factors=kf,
        q_norm_ratios=q_ratios,
        k_norm_ratios=k_ratios,
        rtol=tol,
        upstream_layers_equal=upstream_equal,
        other_q_equal=other_q_equal,
        other_k_equal=other_k_equal,
        v_equal=v_equal,
        expected_output_heads=expected,
        changed_output_heads=changed,
        kl_logits=kl,
        delta_loss=delta_loss,
        logits_changed=logits_changed,
        failures=failures,
        output=output,
        hidden_change=change,
    )
    if failures and raise_on_failure:
        raise InterventionCheckError(str(report))
    return report
