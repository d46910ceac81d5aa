"""The model repository contract: `models/<name>/manifest.json` and its snapshots.

The trainer writes this schema and every reader (server, batch scorer) validates
against it. A reader trusts only what the manifest lists, and only files whose
sha256 matches, so a half-written or tampered snapshot is never served.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from snapens.atomic import atomic_write_bytes, sha256_bytes
from snapens.validation import check_class_names, check_plain_name, one_line

FORMAT_VERSION: Literal[1] = 1
MANIFEST_FILE = "manifest.json"
SNAPSHOT_DIR = "snapshots"
# The fitted temperature lies in 0.05..20 (snapens.calibration); far beyond, float32
# arithmetic in the fused graph would overflow or divide by zero.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3
MAX_SIDE = 8192  # pixels: an input's height and width
MAX_SNAPSHOT_BYTES = 2**31  # protobuf's limit on one ONNX file
SNAPSHOT_FILE = re.compile(rf"{SNAPSHOT_DIR}/[A-Za-z0-9_-][A-Za-z0-9._-]*\.onnx")


class ManifestError(Exception):
    """A model folder whose manifest or snapshot files cannot be trusted."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class InputSpec(_Strict):
    """What a client sends. Normalisation is inside the ONNX graph, so clients send raw pixels."""

    name: str
    shape: list[int] = Field(description="NCHW with -1 for the batch axis, e.g. [-1, 3, 32, 32]")
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    pixel_range: tuple[float, float] = Field(
        description="value of black and of white in what the client sends, e.g. [0, 255]"
    )
    color_mode: Literal["L", "RGB"] = Field(description="channels: L = 1 (grey), RGB = 3")
    resize: Literal["bilinear"] = "bilinear"

    @field_validator("shape")
    @classmethod
    def _nchw(cls, shape: list[int]) -> list[int]:
        if len(shape) != 4 or shape[0] != -1 or any(not 0 < d <= MAX_SIDE for d in shape[1:]):
            raise ValueError(
                f"expected [-1, C, H, W] with C, H, W from 1 to {MAX_SIDE}, got {shape}"
            )
        return shape

    @model_validator(mode="after")
    def _channels_match_mode(self) -> InputSpec:
        expected = 1 if self.color_mode == "L" else 3
        if self.shape[1] != expected:
            raise ValueError(f"color_mode {self.color_mode} needs {expected} channels")
        if not self.pixel_range[0] < self.pixel_range[1]:
            raise ValueError(f"pixel_range must be increasing, got {self.pixel_range}")
        return self

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def height(self) -> int:
        return self.shape[2]

    @property
    def width(self) -> int:
        return self.shape[3]

    def pixels_outside(self, low: float, high: float) -> str | None:
        """Why pixels from `low` to `high` cannot be this input's (None where they can):
        the server refuses such a request and the scorer such a row, as the answers would
        be noise (0..255 sent to a model of 0..16, say)."""
        lo, hi = self.pixel_range
        if lo <= low and high <= hi:
            return None
        return (
            f"pixel values from {low:g} to {high:g}; the model takes raw pixels in its "
            f"pixel_range [{lo:g}, {hi:g}]"
        )


class OutputSpec(_Strict):
    name: str
    kind: Literal["logits"] = "logits"
    shape: list[int]


class SnapshotEntry(_Strict):
    file: str = Field(description="path relative to the model folder, e.g. snapshots/001.onnx")
    sha256: str
    bytes: int = Field(ge=1, le=MAX_SNAPSHOT_BYTES, strict=True)
    cycle: int = Field(ge=1, strict=True)
    epoch: float = Field(ge=0, description="epochs completed when the snapshot was taken")
    step: int = Field(
        ge=1, strict=True, description="optimizer steps completed when the snapshot was taken"
    )
    lr: float = Field(ge=0, description="learning rate of the snapshot's last iteration")
    val_accuracy: float = Field(ge=0, le=1)
    val_nll: float = Field(ge=0)
    export_max_abs_diff: float = Field(
        ge=0, description="max |softmax(onnxruntime) - softmax(torch)| on a validation batch"
    )
    created_at: str

    @field_validator("file")
    @classmethod
    def _inside_snapshot_folder(cls, file: str) -> str:
        # One spelling per file (no "./", no "a/../"), so two entries cannot name one file.
        if not SNAPSHOT_FILE.fullmatch(file):
            raise ValueError(
                f"snapshot file must be {SNAPSHOT_DIR}/<name>.onnx (letters, digits, '.', "
                f"'_', '-'), got {file!r}"
            )
        return file

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, digest: str) -> str:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return digest


class Manifest(_Strict):
    format_version: Literal[1] = FORMAT_VERSION
    name: str
    created_at: str
    updated_at: str
    state: Literal["training", "complete"] = Field(
        description="training: more snapshots may follow; complete: the run has finished"
    )
    input: InputSpec
    output: OutputSpec
    classes: list[str] = Field(min_length=2)
    default_m: int = Field(
        ge=1, strict=True, description="how many of the last snapshots to serve by default"
    )
    temperature: float = Field(
        1.0,
        ge=MIN_TEMPERATURE,
        le=MAX_TEMPERATURE,
        description="every member's logits are divided by it before the softmax, in every "
        "execution path (fitted on the validation split; 1 = none, and the default for "
        "manifests written before it existed)",
    )
    snapshots: list[SnapshotEntry]
    training: dict[str, Any] = Field(
        description="dataset, architecture, schedule and its parameters, budget, seed"
    )

    @field_validator("format_version", mode="before")
    @classmethod
    def _a_number(cls, version: Any) -> Any:
        if isinstance(version, bool):  # true == 1 in Python: not a version
            raise ValueError(f"format_version must be the number {FORMAT_VERSION}")
        return version

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        return check_plain_name(name)

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, classes: list[str]) -> list[str]:
        return check_class_names(classes)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.output.shape != [-1, len(self.classes)]:
            raise ValueError(
                f"output shape {self.output.shape} does not match {len(self.classes)} classes"
            )
        cycles = [s.cycle for s in self.snapshots]
        if cycles != sorted(set(cycles)):
            raise ValueError("snapshots must be in training order with distinct cycles")
        if len({s.file for s in self.snapshots}) != len(self.snapshots):
            raise ValueError("two snapshots name the same file")
        steps = [s.step for s in self.snapshots]
        if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
            raise ValueError("snapshot steps must increase in training order")
        return self

    def last(self, m: int) -> list[SnapshotEntry]:
        """The m most recent snapshots, in training order."""
        if not 1 <= m <= len(self.snapshots):
            raise ManifestError(
                f"model {self.name!r} has {len(self.snapshots)} snapshots; "
                f"m must be 1..{len(self.snapshots)}, got {m}"
            )
        return self.snapshots[-m:]


def snapshot_file_name(cycle: int) -> str:
    return f"{SNAPSHOT_DIR}/{cycle:03d}.onnx"


def read_manifest(model_dir: Path) -> Manifest:
    path = Path(model_dir) / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no manifest (expected a folder written by the trainer)"
        ) from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return Manifest.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise ManifestError(f"{path}: not a manifest (nested too deeply)") from None
    except ValidationError as exc:
        raise ManifestError(f"{path}: {one_line(exc, 'manifest')}") from None
    except ValueError as exc:  # json's own limits, e.g. an integer of over 4300 digits
        raise ManifestError(f"{path}: not a manifest ({exc})") from None


def write_manifest(model_dir: Path, manifest: Manifest) -> None:
    data = manifest.model_dump_json(indent=2).encode() + b"\n"
    atomic_write_bytes(Path(model_dir) / MANIFEST_FILE, data)


def read_snapshot(model_dir: Path, entry: SnapshotEntry) -> bytes:
    """The snapshot's bytes, after checking they match the manifest's sha256.

    The checksum is computed on the very bytes returned, so nothing can change between
    the check and their use."""
    path = Path(model_dir) / entry.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: listed in the manifest but missing") from None
    except OSError as exc:  # a folder, unreadable, ...
        raise ManifestError(
            f"{path}: listed in the manifest but unreadable ({exc.strerror})"
        ) from None
    if len(data) != entry.bytes:
        raise ManifestError(f"{path}: {len(data)} bytes, the manifest says {entry.bytes}")
    digest = sha256_bytes(data)
    if digest != entry.sha256:
        raise ManifestError(
            f"{path}: sha256 {digest[:12]}… does not match the manifest's {entry.sha256[:12]}…"
        )
    return data
