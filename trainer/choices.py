"""The trainer's choices, each an enum defined once: the flags, the config and the
factories that build each (`trainer.schedules`, `trainer.data`) use them."""

from __future__ import annotations

from enum import StrEnum


class Schedule(StrEnum):
    """The learning-rate schedules (`trainer.schedules` builds each)."""

    SGDR = "sgdr"
    SNAPSHOT = "snapshot"
    FGE = "fge"
    COSINE = "cosine"
    STEP = "step"
    PLATEAU = "plateau"
    LIPSCHITZ = "lipschitz"

    @property
    def cyclic(self) -> bool:
        """A snapshot per cycle; the others take theirs at evenly spaced epochs."""
        return self in (Schedule.SGDR, Schedule.SNAPSHOT, Schedule.FGE)


class DatasetKind(StrEnum):
    """Where the examples come from (`trainer.data.load_dataset` loads each)."""

    DIGITS = "digits"
    IMAGEFOLDER = "imagefolder"
    NPZ = "npz"


class Augment(StrEnum):
    AUTO = "auto"
    NONE = "none"
    CROP_FLIP = "crop-flip"
