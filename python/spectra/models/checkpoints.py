"""Training checkpoints: the step of a checkpoint folder, or of a capture made from one."""

from __future__ import annotations

import json
import re
from pathlib import Path


def checkpoint_step(folder: str | Path) -> int:
    """The training step of a checkpoint folder: ``step-000100`` / ``checkpoint-100`` in its name, else
    ``global_step`` of its ``trainer_state.json``.

    Example:
        >>> checkpoint_step("runs/step-000400"), checkpoint_step("out/checkpoint-1500")
        (400, 1500)
    """
    folder = Path(folder)
    match = re.fullmatch(r"(?:step|checkpoint)-0*(\d+)", folder.name)
    if match:
        return int(match.group(1))
    state = folder / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text())["global_step"])
    raise ValueError(
        f"checkpoints: cannot tell the training step of {folder} (name it step-N or checkpoint-N, "
        "or keep its trainer_state.json)"
    )


def capture_step(folder: Path, model_path: str | None) -> int | None:
    """The training step of a capture: from its folder, else from the captured model's folder."""
    for candidate in (folder, Path(model_path) if model_path else None):
        if candidate is not None:
            try:
                return checkpoint_step(candidate)
            except ValueError:
                pass
    return None
