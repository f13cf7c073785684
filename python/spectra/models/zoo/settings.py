"""Hyper-parameters of a zoo training run."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything besides the model config and the data that changes the resulting weights.

    The thread count is here because float reductions, and so the weights, depend on it.

    >>> TrainSettings().seq_len
    256
    """

    steps: int = 1600
    seed: int = 0
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    threads: int = 2
