"""Reading the training settings: a .json or .toml config file, merged with the flags
given, into one validated TrainConfig (or one line naming what to fix)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from snapens.validation import one_line
from trainer.config import TrainConfig
from trainer.errors import UserError


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the flag and what was expected."""
    first = exc.errors()[0]
    if first["type"] == "extra_forbidden" and first["loc"]:
        return f"unknown setting {first['loc'][0]!r} in the config file"
    return one_line(exc, flag=True)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a .json or .toml config file into a dict of settings."""
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            raise UserError(f"--config {path}: expected a .json or .toml file")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"--config {path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"--config {path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a table of settings at the top level")
    settings = {key.replace("-", "_"): value for key, value in data.items()}
    for key, value in settings.items():  # pydantic would take true as 1 for a number
        field = TrainConfig.model_fields.get(key)
        if isinstance(value, bool) and field is not None and field.annotation is not bool:
            raise UserError(
                f"--config {path}: {key} = {str(value).lower()}: expected a value, not true/false"
            )
    return settings


# Settings that only one schedule or dataset reads: given for another, they would be
# stored in the run's configuration and silently do nothing.
SCHEDULE_SETTINGS = {
    "sgdr": ("lr_min", "t0", "t_mult"),
    "fge": ("fge_fraction", "cycle_epochs", "fge_lr_high", "fge_lr_low"),
    "plateau": ("plateau_patience", "plateau_factor"),
}
IMAGEFOLDER_SETTINGS = ("image_size",)


def check_settings_apply(cfg: TrainConfig, given: set[str]) -> None:
    """Refuse a setting the user gave that this run would not read."""
    for schedule, keys in SCHEDULE_SETTINGS.items():
        for key in keys:
            if key in given and str(cfg.schedule) != schedule:
                raise UserError(
                    f"--{key.replace('_', '-')} applies to --schedule {schedule} only "
                    f"(this run: {cfg.schedule}); drop it"
                )
    for key in IMAGEFOLDER_SETTINGS:
        if key in given and str(cfg.dataset) != "imagefolder":
            raise UserError(
                f"--{key.replace('_', '-')} applies to --dataset imagefolder only "
                f"(this run: {cfg.dataset}); drop it"
            )


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Flags override the config file; either may be empty."""
    try:
        return TrainConfig(**{**file_values, **flag_values})
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc)) from None
