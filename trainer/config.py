"""The training configuration: one pydantic model, filled from a config file and flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from snapens.flags import group
from snapens.validation import check_plain_name
from trainer.choices import Augment, DatasetKind, Schedule

# The --help groups of the fields (python -m trainer --help): a field without one is listed
# under "other settings".
DATA = group("data")
OPTIMISATION = group("network and optimisation")
OUTPUT = group("output")
RUN = group("run")

# Seeds feed torch.manual_seed after arithmetic (seed * 7919 + ...), which takes 64 bits.
MAX_SEED = 2**32 - 1
MAX_IMAGE_SIZE = 1024  # pixels a side: the whole dataset is held in memory as pixels
MAX_T_MULT = 64  # periods that grow faster than this fill no budget anyone trains

# Settings that may differ between a run and its resumption: they do not change the result.
RUNTIME_FIELDS = frozenset(
    {
        "resume",
        "overwrite",
        "device",
        "quiet",
        "config",
        "skip_if_exists",
        "repository",
        "eval_every",
    }
)


class TrainConfig(BaseModel):
    """Everything a training run depends on. Unset optional values get dataset-aware defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # data
    dataset: DatasetKind = Field(
        DatasetKind.DIGITS,
        description="digits: the embedded 8x8 digits; imagefolder: a folder or .zip of class "
        "folders; npz: arrays x, y (and classes) in a .npz file",
        json_schema_extra=DATA,
    )
    data: Path | None = Field(
        None, description="dataset path for imagefolder and npz", json_schema_extra=DATA
    )
    val_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="held-out share per class; unset: 0.5 for digits (enough held-out images "
        "for the snapshots' disagreement to show), 0.1 otherwise",
        json_schema_extra=DATA,
    )
    train_subset: int | None = Field(
        None,
        ge=1,
        description="train on a fixed, stratified subset of this many training examples (the "
        "validation split is unchanged); unset: all of them",
        json_schema_extra=DATA,
    )
    split_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the validation split", json_schema_extra=DATA
    )
    image_size: int | None = Field(
        None,
        gt=0,
        le=MAX_IMAGE_SIZE,
        description="resize images to this square size; unset: their own size",
        json_schema_extra=DATA,
    )
    cache_dir: Path | None = Field(
        None,
        description="where decoded image folders and the digits are cached; unset: "
        "$XDG_CACHE_HOME/snapens/datasets (~/.cache/snapens/datasets)",
        json_schema_extra=DATA,
    )
    augment: Augment = Field(
        Augment.AUTO,
        description="auto: random crop + flip for RGB images of 16px and more, none otherwise",
        json_schema_extra=DATA,
    )

    # network
    arch: str = Field(
        "auto",
        description="the network; auto: mlp for 8x8 inputs, resnet20 otherwise",
        json_schema_extra=OPTIMISATION,
    )

    # optimisation
    schedule: Schedule = Field(
        Schedule.SNAPSHOT, description="learning-rate schedule", json_schema_extra=OPTIMISATION
    )
    cycles: int | None = Field(
        None,
        ge=1,
        description="M: snapshots, the cycles of sgdr/snapshot; unset: 5 (sgdr with --t0: "
        "the periods that fit the budget)",
        json_schema_extra=OPTIMISATION,
    )
    epochs: int | None = Field(
        None,
        ge=1,
        description="B: the training budget in epochs; unset: 25 for digits (5 cycles of 5), "
        "50 otherwise",
        json_schema_extra=OPTIMISATION,
    )
    lr: float = Field(
        0.1, description="α0 / η_max / initial learning rate", json_schema_extra=OPTIMISATION
    )
    lr_min: float = Field(0.0, ge=0, description="sgdr η_min", json_schema_extra=OPTIMISATION)
    t0: int | None = Field(
        None,
        ge=1,
        description="sgdr first restart period in epochs; unset: fills the budget",
        json_schema_extra=OPTIMISATION,
    )
    t_mult: float = Field(
        1,
        le=MAX_T_MULT,
        description="sgdr period multiplier, a whole number >= 1",
        json_schema_extra=OPTIMISATION,
    )
    warmup_epochs: int = Field(
        0, ge=0, description="linear warmup before the cycles", json_schema_extra=OPTIMISATION
    )
    batch_size: int = Field(
        64, ge=1, description="training examples per step", json_schema_extra=OPTIMISATION
    )
    momentum: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="SGD momentum; unset: 0.9, 0 for lipschitz",
        json_schema_extra=OPTIMISATION,
    )
    nesterov: bool = Field(True, description="Nesterov momentum", json_schema_extra=OPTIMISATION)
    weight_decay: float = Field(
        1e-4, ge=0, description="SGD weight decay", json_schema_extra=OPTIMISATION
    )
    plateau_patience: int = Field(
        5,
        ge=0,
        description="plateau: epochs without improvement before the rate drops",
        json_schema_extra=OPTIMISATION,
    )
    plateau_factor: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="plateau: the factor the rate drops by",
        json_schema_extra=OPTIMISATION,
    )
    fge_fraction: float = Field(
        0.7,
        gt=0,
        lt=1,
        description="fge: the share of the budget (after any warmup) spent in the first, "
        "cosine phase; whole cycles of --cycle-epochs fill the rest",
        json_schema_extra=OPTIMISATION,
    )
    cycle_epochs: int = Field(
        2,
        ge=2,
        description="fge: epochs per cycle, even; a snapshot at each cycle's middle",
        json_schema_extra=OPTIMISATION,
    )
    fge_lr_high: float = Field(
        0.05,
        gt=0,
        description="fge: α1, the rate at each cycle's start and end (the first phase decays "
        "from --lr to it)",
        json_schema_extra=OPTIMISATION,
    )
    fge_lr_low: float = Field(
        1e-4,
        gt=0,
        description="fge: α2, the rate at each cycle's middle",
        json_schema_extra=OPTIMISATION,
    )
    eval_batch_size: int = Field(
        1000, ge=1, description="examples per evaluation batch", json_schema_extra=OPTIMISATION
    )
    eval_every: int = Field(
        1,
        ge=1,
        description="validate every N epochs, and always at a snapshot and after the last "
        "epoch (the per-epoch curves then have a point every N epochs; the weights are the "
        "same whatever N)",
        json_schema_extra=OPTIMISATION,
    )

    # output
    repository: Path = Field(
        Path("models"), description="model repository folder", json_schema_extra=OUTPUT
    )
    name: str | None = Field(
        None, description="model folder name; unset: the dataset's name", json_schema_extra=OUTPUT
    )
    overwrite: bool = Field(
        False, description="replace an existing model folder", json_schema_extra=OUTPUT
    )
    resume: bool = Field(False, description="continue an interrupted run", json_schema_extra=OUTPUT)
    skip_if_exists: bool = Field(
        False,
        description="if the model is complete, print its summary; if interrupted, resume it",
        json_schema_extra=OUTPUT,
    )
    snapshots: bool = Field(
        True,
        description="take snapshots (--no-snapshots only to measure what they cost)",
        json_schema_extra=OUTPUT,
    )
    swa: bool = Field(
        False,
        description="also write the snapshots' averaged weights (SWA, batch norm recomputed) "
        "as the one-member model <name>-swa",
        json_schema_extra=OUTPUT,
    )
    calibrate: bool = Field(
        True,
        description="fit a temperature on the validation split that minimises the "
        "ensemble's NLL, stored in the manifest (--no-calibrate: 1)",
        json_schema_extra=OUTPUT,
    )
    default_m: int | None = Field(
        None,
        ge=1,
        description="snapshots served by default; unset: the m >= 2 whose last-m ensemble "
        "has the lowest validation NLL",
        json_schema_extra=OUTPUT,
    )

    # runtime
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="seed of the initial weights and the data order",
        json_schema_extra=RUN,
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N", json_schema_extra=RUN)
    quiet: bool = Field(
        False, description="print only errors and the summary", json_schema_extra=RUN
    )
    config: Path | None = Field(
        None,
        description="a .json or .toml file of these settings (names as the flags', - or _); "
        "flags given override it",
        json_schema_extra=RUN,
    )

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, lr: float) -> float:
        if not lr > 0:
            raise ValueError(f"the learning rate must be positive, got {lr}")
        return lr

    @field_validator("cycle_epochs")
    @classmethod
    def _even_cycle(cls, cycle_epochs: int) -> int:
        if cycle_epochs % 2:
            raise ValueError(
                f"an FGE cycle is an even number of epochs (the snapshot sits at its middle), "
                f"got {cycle_epochs}"
            )
        return cycle_epochs

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
        return None if name is None else check_plain_name(name)

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
        if self.lr_min >= self.lr:
            raise ValueError(f"--lr-min {self.lr_min} must be below --lr {self.lr}")
        if self.fge_lr_low >= self.fge_lr_high:
            raise ValueError(
                f"--fge-lr-low {self.fge_lr_low} must be below --fge-lr-high {self.fge_lr_high} "
                "(the rate falls from α1 to α2 in each cycle's first half)"
            )
        if self.swa and not self.snapshots:
            raise ValueError("--swa averages the snapshots: drop --no-snapshots")
        if self.schedule is Schedule.PLATEAU and self.eval_every != 1:
            raise ValueError(
                "plateau reads the validation loss after every epoch: drop --eval-every"
            )
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
        """B; unset: 25 epochs for digits (5 cycles of 5), 50 otherwise."""
        if self.epochs is not None:
            return self.epochs
        return 25 if self.dataset is DatasetKind.DIGITS else 50

    @property
    def resolved_val_fraction(self) -> float:
        if self.val_fraction is not None:
            return self.val_fraction
        return 0.5 if self.dataset is DatasetKind.DIGITS else 0.1

    @property
    def resolved_momentum(self) -> float:
        """SGD momentum: 0.9, except plain SGD for lipschitz, as its authors train it."""
        if self.momentum is not None:
            return self.momentum
        return 0.0 if self.schedule is Schedule.LIPSCHITZ else 0.9

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the result, for checking a resumption."""
        return json.loads(self.model_dump_json(exclude=set(RUNTIME_FIELDS)))  # type: ignore[no-any-return]
