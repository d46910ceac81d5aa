"""The training configuration: one pydantic model, filled from a config file and flags."""

from __future__ import annotations

import json
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from snapens.validation import one_line
from trainer.errors import UserError


class Schedule(StrEnum):
    """The learning-rate schedules (`trainer.schedules` builds each)."""

    SGDR = "sgdr"
    SNAPSHOT = "snapshot"
    STEP = "step"
    PLATEAU = "plateau"
    LIPSCHITZ = "lipschitz"

    @property
    def cyclic(self) -> bool:
        """A snapshot per restart cycle; the others take theirs at evenly spaced epochs."""
        return self in (Schedule.SGDR, Schedule.SNAPSHOT)


class DatasetKind(StrEnum):
    """Where the examples come from (`trainer.data.load_dataset` loads each)."""

    DIGITS = "digits"
    IMAGEFOLDER = "imagefolder"
    NPZ = "npz"


class Augment(StrEnum):
    AUTO = "auto"
    NONE = "none"
    CROP_FLIP = "crop-flip"


# Settings that may differ between a run and its resumption: they do not change the result.
RUNTIME_FIELDS = frozenset(
    {
        "resume",
        "overwrite",
        "device",
        "quiet",
        "config",
        "skip_if_exists",
        "snapshots",
        "repository",
    }
)


class TrainConfig(BaseModel):
    """Everything a training run depends on. Unset optional values get dataset-aware defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # data
    dataset: DatasetKind = DatasetKind.DIGITS
    data: Path | None = Field(None, description="dataset path (folder, .zip or .npz)")
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 0
    image_size: int | None = Field(None, gt=0, description="resize images to this square size")
    cache_dir: Path | None = None
    augment: Augment = Augment.AUTO

    # network
    arch: str = "auto"

    # optimisation
    schedule: Schedule = Schedule.SNAPSHOT
    cycles: int | None = Field(None, ge=1, description="M: snapshots (cycles for sgdr/snapshot)")
    epochs: int | None = Field(None, ge=1, description="B: the training budget in epochs")
    lr: float = Field(0.1, description="α0 / η_max / initial learning rate")
    lr_min: float = Field(0.0, ge=0, description="η_min of sgdr")
    t0: int | None = Field(None, ge=1, description="sgdr: first restart period in epochs")
    t_mult: float = Field(1, description="sgdr: period multiplier")
    warmup_epochs: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    momentum: float | None = Field(None, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    plateau_patience: int = Field(5, ge=0)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    eval_batch_size: int = Field(1000, ge=1)

    # output
    repository: Path = Path("models")
    name: str | None = None
    overwrite: bool = False
    resume: bool = False
    skip_if_exists: bool = False
    snapshots: bool = Field(True, description="take snapshots (off only to measure their cost)")

    # runtime
    seed: int = 0
    device: str = "auto"
    quiet: bool = False
    config: Path | None = None

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, lr: float) -> float:
        if not lr > 0:
            raise ValueError(f"the learning rate must be positive, got {lr}")
        return lr

    @field_validator("t_mult")
    @classmethod
    def _t_mult(cls, t_mult: float) -> float:
        if t_mult < 1:
            raise ValueError(f"T_mult must be >= 1 (periods never shrink), got {t_mult}")
        if t_mult != int(t_mult):
            raise ValueError(
                f"T_mult must be a whole number (periods of whole epochs), got {t_mult}"
            )
        return t_mult

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        if name is not None and (
            not name or name.startswith(".") or any(c in name for c in "/\\:") or len(name) > 100
        ):
            raise ValueError(
                f"a model name is a plain folder name (no '/', not hidden), got {name!r}"
            )
        return name

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {device!r}")
        return device

    @model_validator(mode="after")
    def _data_path(self) -> TrainConfig:
        if self.dataset is not DatasetKind.DIGITS and self.data is None:
            raise ValueError(f"--dataset {self.dataset} needs --data PATH")
        if self.overwrite and self.resume:
            raise ValueError("--overwrite and --resume contradict each other: pick one")
        if self.schedule is Schedule.LIPSCHITZ and self.warmup_epochs:
            raise ValueError("lipschitz computes its own rate every epoch: drop --warmup-epochs")
        return self

    # Resolved values -----------------------------------------------------------------

    @property
    def model_name(self) -> str:
        if self.name is not None:
            return self.name
        if self.dataset is DatasetKind.DIGITS or self.data is None:
            return str(DatasetKind.DIGITS)
        return self.data.name.split(".")[0] or "model"

    @property
    def num_snapshots(self) -> int:
        return self.cycles if self.cycles is not None else 5

    @property
    def budget_epochs(self) -> int:
        return self.epochs if self.epochs is not None else 50

    @property
    def resolved_momentum(self) -> float:
        """SGD momentum: 0.9, except plain SGD for lipschitz, as its authors train it."""
        if self.momentum is not None:
            return self.momentum
        return 0.0 if self.schedule is Schedule.LIPSCHITZ else 0.9

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the result, for checking a resumption."""
        return json.loads(self.model_dump_json(exclude=set(RUNTIME_FIELDS)))  # type: ignore[no-any-return]


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
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a table of settings at the top level")
    return {key.replace("-", "_"): value for key, value in data.items()}


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Flags override the config file; either may be empty."""
    try:
        return TrainConfig(**{**file_values, **flag_values})
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc)) from None
