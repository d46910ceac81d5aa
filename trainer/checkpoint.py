"""Training state for `--resume`: saved atomically, loaded without pickle code execution,
and the check that a resumption runs with the settings the run was started with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from snapens.atomic import atomic_writer
from snapens.validation import changed_settings
from trainer.config import TrainConfig
from trainer.errors import UserError

# 2: the schedule's state is plain data and the learning rates are not recorded
# (format 1 held torch schedulers' state_dicts and every step's rate).
CHECKPOINT_FORMAT = 2


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_writer(path) as handle:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: any unpickling error
        raise UserError(f"--resume: cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("format"), int):
        raise UserError(f"--resume: {path} is not a checkpoint of this trainer")
    if state["format"] != CHECKPOINT_FORMAT:
        raise UserError(
            f"--resume: {path} was written by another version of the trainer (checkpoint "
            f"format {state['format']}, this one reads {CHECKPOINT_FORMAT}); "
            "start over with --overwrite"
        )
    return state


def check_resume_config(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    """Refuse a resumption whose settings differ from the checkpoint's (`cfg.fingerprint()`)."""
    now = cfg.fingerprint()
    changed = changed_settings(saved, now)
    if changed:
        key = changed[0]
        flag = "--" + key.replace("_", "-")
        raise UserError(
            f"--resume: the run was started with {flag} {saved.get(key)}, not {now.get(key)}; "
            "resume with the same settings, or start over with --overwrite"
        )
