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
from trainer.schedules import Plan

# 2: the schedule's state is plain data and the learning rates are not recorded
# (format 1 held torch schedulers' state_dicts and every step's rate).
CHECKPOINT_FORMAT = 2


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_writer(path) as handle:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, handle)


# What every checkpoint holds, and of which type: anything else is not this trainer's.
REQUIRED = {
    "config": dict,
    "epoch": int,
    "step": int,
    "model": dict,
    "optimizer": dict,
    "schedule": dict,
    "rng": dict,
    "history": dict,
}


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: any unpickling error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"--resume: cannot read checkpoint {path} ({first}); start over with --overwrite"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("format"), int):
        raise UserError(f"--resume: {path} is not a checkpoint of this trainer")
    if state["format"] != CHECKPOINT_FORMAT:
        raise UserError(
            f"--resume: {path} was written by another version of the trainer (checkpoint "
            f"format {state['format']}, this one reads {CHECKPOINT_FORMAT}); "
            "start over with --overwrite"
        )
    wrong = [key for key, kind in REQUIRED.items() if not isinstance(state.get(key), kind)]
    if wrong or state["epoch"] < 0 or state["step"] < 0:
        what = f"its {', '.join(wrong)} missing or mistyped" if wrong else "a negative position"
        raise UserError(f"--resume: {path} is damaged ({what}); start over with --overwrite")
    return state


def check_resume_position(path: Path, state: dict[str, Any], plan: Plan) -> None:
    """A checkpoint is written at the end of an epoch of this run's plan."""
    epoch, step = state["epoch"], state["step"]
    if not (1 <= epoch <= plan.epochs and step == epoch * plan.iterations_per_epoch):
        raise UserError(
            f"--resume: {path} stands at epoch {epoch}, step {step}, which is not the end of "
            f"an epoch of this run ({plan.epochs} epochs of {plan.iterations_per_epoch} steps); "
            "start over with --overwrite"
        )


def check_resume_data(saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """Refuse a resumption on other data than the run's (`trainer.data.data_identity`).
    Checkpoints written before the data were recorded carry none: nothing to compare."""
    if saved is None:
        return
    changed = changed_settings(saved, now)
    if changed:
        key = changed[0]
        raise UserError(
            f"--resume: the data differ from the run's ({key.replace('_', ' ')}: "
            f"{_short(saved.get(key))} then, {_short(now.get(key))} now); resume with the same "
            "data, or start over with --overwrite"
        )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_resume_config(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    """Refuse a resumption whose settings differ from the checkpoint's (`cfg.fingerprint()`)."""
    now = cfg.fingerprint()
    # Checkpoints written while --no-snapshots counted as a runtime setting do not hold it.
    saved = {"snapshots": True, **saved}
    changed = changed_settings(saved, now)
    if changed:
        key = changed[0]
        raise UserError(
            f"--resume: the run was started with {_setting(key, saved.get(key))}, not "
            f"{_setting(key, now.get(key))}; resume with the same settings, or start over "
            "with --overwrite"
        )


def _setting(key: str, value: Any) -> str:
    """A setting as its flag is written: --swa / --no-swa, --lr 0.1."""
    flag = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"
