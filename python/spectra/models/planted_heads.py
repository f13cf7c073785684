"""A tiny GPT-2 whose attention heads are set by hand, for validating head classifiers.

Every weight is chosen, none trained, so what each head does is known exactly:

| (layer, head) | label | how |
|---|---|---|
| (0, 0) | ``sink`` | q is a constant (the query bias); k reads a flag only position 0's embedding carries |
| (0, 1) | ``previous_token`` | positions are coded by sinusoid pairs at 6 frequencies π/2^m; W_Q rotates them back one step, so q_t·k_j = g·Σ cos θ_m (t − 1 − j), maximal only at j = t − 1; its OV circuit copies the key's token into a "previous token" subspace |
| (0, 2) | ``gatherer`` | W_Q = 0 and no bias: all logits 0, exactly uniform attention |
| (0, 3) | ``positional`` | as (0, 1) rotated two steps: attends to j = t − 2 |
| (1, 0) | ``induction`` | q reads the current token, k reads the previous-token copy that (0, 1) wrote: on a repeated block the second copy attends to the token after the earlier occurrence (key 0, which has no previous token, is pushed away through the position-0 flag) |
| (1, 1), (1, 3) | ``gatherer`` | W_Q = 0 |
| (1, 2) | ``sink`` | as (0, 0) |

GPT-2's LayerNorm subtracts the mean and divides by the standard deviation of the residual, so
every feature is written as a (+v, −v) pair of dimensions (zero mean) and every token carries the
same feature magnitudes (one token, one position code of constant norm, one of two position
flags): LayerNorm is then the same scale for every token, and the hand-set gains keep their
meaning. MLPs are zero. Token 0 is never used by :func:`repeated_random_tokens`.
"""

from __future__ import annotations

import math

import torch
from transformers import GPT2Config, GPT2LMHeadModel

__all__ = ["PLANTED", "planted_model", "repeated_random_tokens"]

VOCAB = 32
POSITIONS = 64
N_HEADS = 4
HEAD_DIM = 48
N_EMBD = N_HEADS * HEAD_DIM
FREQUENCIES = [math.pi / 2**m for m in range(6)]  # period 64: no alias within the context

# Residual layout: [token ±] [position code ±] [position flags ±] [previous-token copy ±].
TOKEN = 0
POSITION = 2 * VOCAB
N_POSITION = 2 * len(FREQUENCIES)
FLAG = POSITION + 2 * N_POSITION
COPY = FLAG + 4
assert COPY + 2 * VOCAB <= N_EMBD

#: What each hand-set head is.
PLANTED: dict[tuple[int, int], str] = {
    (0, 0): "sink",
    (0, 1): "previous_token",
    (0, 2): "gatherer",
    (0, 3): "positional",
    (1, 0): "induction",
    (1, 1): "gatherer",
    (1, 2): "sink",
    (1, 3): "gatherer",
}

SINK_GAIN = 60.0  # logit of key 0 for a sink head, before the 1/√D scaling
POSITION_GAIN = 30.0  # logit gap between the target offset and the best other offset
INDUCTION_GAIN = 30.0


def _position_code(t: int) -> torch.Tensor:
    angles = torch.tensor([f * t for f in FREQUENCIES], dtype=torch.float64)
    return torch.stack([angles.cos(), angles.sin()], dim=1).reshape(-1)  # (2K,)


def _rotation(steps: int) -> torch.Tensor:
    """(2K, 2K): maps the code of position t to the code of position t − steps."""
    block = torch.zeros(N_POSITION, N_POSITION, dtype=torch.float64)
    for m, f in enumerate(FREQUENCIES):
        c, s = math.cos(f * steps), math.sin(f * steps)
        # (cos a, sin a) -> (cos(a − φ), sin(a − φ)) as a row-vector map x @ R
        block[2 * m : 2 * m + 2, 2 * m : 2 * m + 2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return block


def _layer_norm_scale() -> float:
    # Every token: a token pair (2), a position code pair (2 · K), a flag pair (2); layer 1 adds a copy pair (2).
    return math.sqrt(N_EMBD / (2 + 2 * len(FREQUENCIES) + 2))


def planted_model() -> tuple[GPT2LMHeadModel, dict[tuple[int, int], str]]:
    """The hand-set model (eval mode, float32, eager attention) and :data:`PLANTED`.

    Example:
        >>> import torch
        >>> model, planted = planted_model()
        >>> ids = repeated_random_tokens(1, 8)
        >>> attn = model(ids, output_attentions=True).attentions
        >>> bool(attn[0][0, 1, 5, 4] > 0.9), planted[(1, 0)]   # L0H1 at query 5 looks at key 4
        (True, 'induction')
    """
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=N_EMBD,
        n_layer=2,
        n_head=N_HEADS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    model.set_attn_implementation("eager")
    d, e = HEAD_DIM, N_EMBD
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for name, param in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                param.fill_(1.0)
        wte = torch.zeros(VOCAB, e, dtype=torch.float64)
        for tok in range(VOCAB):
            wte[tok, TOKEN + tok], wte[tok, TOKEN + VOCAB + tok] = 1.0, -1.0
        wpe = torch.zeros(POSITIONS, e, dtype=torch.float64)
        for t in range(POSITIONS):
            code = _position_code(t)
            wpe[t, POSITION : POSITION + N_POSITION] = code
            wpe[t, POSITION + N_POSITION : POSITION + 2 * N_POSITION] = -code
            flag = FLAG if t == 0 else FLAG + 2
            wpe[t, flag], wpe[t, flag + 1] = 1.0, -1.0
        model.transformer.wte.weight.copy_(wte)
        model.transformer.wpe.weight.copy_(wpe)

        root_d = math.sqrt(d)
        s0 = _layer_norm_scale()  # LayerNorm's scale on every layer-0 token
        layer0, layer1 = (block.attn for block in model.transformer.h)

        def q_cols(h):
            return slice(h * d, (h + 1) * d)

        def k_cols(h):
            return slice(e + h * d, e + (h + 1) * d)

        def v_cols(h):
            return slice(2 * e + h * d, 2 * e + (h + 1) * d)

        def plant_sink(attn, h, scale):
            attn.c_attn.bias[q_cols(h).start] = 1.0
            attn.c_attn.weight[FLAG, k_cols(h).start] = SINK_GAIN * root_d / scale

        def plant_offset(attn, h, steps, scale):
            # q_t = g R(steps) code_t, k_j = code_j: the logit gap between offset `steps` and any other is >= 2g s².
            g = POSITION_GAIN * root_d / (2 * scale * scale)
            rot = _rotation(steps)
            rows = slice(POSITION, POSITION + N_POSITION)
            attn.c_attn.weight[rows, q_cols(h).start : q_cols(h).start + N_POSITION] = (g * rot).float()
            attn.c_attn.weight[rows, k_cols(h).start : k_cols(h).start + N_POSITION] = torch.eye(N_POSITION)

        plant_sink(layer0, 0, s0)
        plant_offset(layer0, 1, 1, s0)
        plant_offset(layer0, 3, 2, s0)
        # L0H1's OV: copy the attended token (value dims 0..V) into the previous-token subspace, as a ± pair.
        for tok in range(VOCAB):
            layer0.c_attn.weight[TOKEN + tok, v_cols(1).start + tok] = 1.0 / s0
            layer0.c_proj.weight[1 * d + tok, COPY + tok] = 1.0
            layer0.c_proj.weight[1 * d + tok, COPY + VOCAB + tok] = -1.0
        s1 = math.sqrt(N_EMBD / (2 + 2 * len(FREQUENCIES) + 2 + 2))
        for tok in range(VOCAB):
            layer1.c_attn.weight[TOKEN + tok, q_cols(0).start + tok] = 1.0
            layer1.c_attn.weight[COPY + tok, k_cols(0).start + tok] = INDUCTION_GAIN * root_d / (s1 * s1)
        # Position 0 has no previous token (L0H1 copied its own): push key 0 out of the induction head's reach.
        layer1.c_attn.bias[q_cols(0).start + VOCAB] = 1.0
        layer1.c_attn.weight[FLAG, k_cols(0).start + VOCAB] = -2 * INDUCTION_GAIN * root_d / s1
        plant_sink(layer1, 2, s1)
    return model.float().eval(), dict(PLANTED)


def repeated_random_tokens(n: int, block: int, *, seed: int = 0) -> torch.Tensor:
    """``(n, 2·block)`` ids for the planted model: blocks of distinct tokens from 1..VOCAB−1, twice."""
    if not 2 <= block <= VOCAB - 1 or 2 * block > POSITIONS:
        raise ValueError(f"block: expected 2..{min(VOCAB - 1, POSITIONS // 2)}; got {block}")
    gen = torch.Generator().manual_seed(seed)
    first = torch.stack([torch.randperm(VOCAB - 1, generator=gen)[:block] + 1 for _ in range(n)])
    return torch.cat([first, first], dim=1)
