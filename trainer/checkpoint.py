"""Training state for `--resume`: saved atomically, loaded without pickle code execution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from snapens.atomic import atomic_writer
from trainer.errors import UserError

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_writer(path) as handle:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: any unpickling error
        raise UserError(f"--resume: cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"--resume: {path} is not a checkpoint of this trainer")
    return state
