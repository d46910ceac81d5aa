"""Writing one model folder of the repository, `models/<name>/`, as docs/design.md fixes it.

Order of writes: a snapshot file is written under a temporary name, flushed and
renamed; only then is the manifest (also written atomically) extended to list it.
Removals go the other way: the manifest stops listing a file before it is deleted.
A crash at any point leaves a manifest that lists only complete, checksummed files.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapens.atomic import atomic_write_bytes, remove_stale_temporaries, sha256_bytes
from snapens.manifest import (
    MANIFEST_FILE,
    SNAPSHOT_DIR,
    Manifest,
    ManifestError,
    SnapshotEntry,
    read_manifest,
    read_snapshot,
    snapshot_file_name,
    utc_now,
    write_manifest,
)

CHECKPOINT_DIR = "checkpoint"


class FolderError(ValueError):
    """A model folder that cannot be written as asked: it exists, or cannot be resumed."""


@dataclass(frozen=True)
class SnapshotMeta:
    cycle: int
    epoch: float
    step: int
    lr: float
    val_accuracy: float
    val_nll: float


class ModelFolder:
    def __init__(self, repository: Path, name: str) -> None:
        self.path = Path(repository) / name
        self.name = name
        self._manifest: Manifest | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_DIR / "last.pt"

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = read_manifest(self.path)
        return self._manifest

    def exists(self) -> bool:
        if self.path.is_file() or self.path.is_symlink():
            return True
        return self.path.exists() and any(self.path.iterdir())

    def check_target(self, overwrite: bool, resume: bool) -> None:
        """Refuse to touch an existing folder unless asked to; fail before any training."""
        if resume:
            if not self.checkpoint_path.is_file():
                again = (
                    "start it again with --overwrite (it stopped before its first epoch ended)"
                    if self.exists()
                    else "start a new run without --resume"
                )
                raise FolderError(
                    f"--resume: {self.path} has no checkpoint to resume from; {again}"
                )
            return
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise FolderError(f"the repository {self.path.parent} is a file, not a folder")
        if self.exists() and not overwrite:
            ways = (
                "pass --resume to continue it, --overwrite"
                if self.checkpoint_path.is_file()
                else "pass --overwrite"  # nothing to resume from
            )
            raise FolderError(
                f"{self.path} already exists: {ways} to replace it, or choose another --name"
            )

    def create(self, manifest: Manifest) -> None:
        """Start a fresh folder (replacing an old one when overwriting) with an empty manifest."""
        if self.path.is_symlink() or self.path.is_file():
            self.path.unlink()  # --overwrite replaces the link or file, never what it points to
        elif self.path.exists():
            shutil.rmtree(self.path)
        (self.path / SNAPSHOT_DIR).mkdir(parents=True)
        self._write(manifest)

    def reopen(self, last_step: int) -> None:
        """Resume: keep only snapshots taken up to the checkpoint's step, drop any later ones
        (the resumed run takes them again) and any half-written temporaries.

        The manifest is rewritten first, atomically and in state "training", so that it
        never lists a file this method is about to delete; only then are the dropped
        snapshots, stale temporaries and orphans removed. A kill at any point leaves a valid
        folder (everything listed is present and checksummed), and reopening it again
        finishes the job: the steps are idempotent.
        """
        try:
            manifest = self.manifest
        except ManifestError as exc:
            raise FolderError(f"--resume: {exc}") from None
        keep = [s for s in manifest.snapshots if s.step <= last_step]
        dropped = [s for s in manifest.snapshots if s.step > last_step]
        for entry in keep:  # the run cannot take them again: they must be whole
            try:
                read_snapshot(self.path, entry)
            except ManifestError as exc:
                raise FolderError(
                    f"--resume: {exc}; the run cannot take snapshot {entry.cycle} again: "
                    "start over with --overwrite"
                ) from None
        self._write(manifest.model_copy(update={"snapshots": keep, "state": "training"}))
        for entry in dropped:
            (self.path / entry.file).unlink(missing_ok=True)
        for directory in (self.path, self.path / SNAPSHOT_DIR, self.path / CHECKPOINT_DIR):
            remove_stale_temporaries(directory)
        listed = {s.file for s in keep}
        for orphan in sorted((self.path / SNAPSHOT_DIR).glob("*.onnx")):
            if f"{SNAPSHOT_DIR}/{orphan.name}" not in listed:
                orphan.unlink(missing_ok=True)

    def add_snapshot(
        self, onnx_bytes: bytes, meta: SnapshotMeta, export_diff: float
    ) -> SnapshotEntry:
        file = snapshot_file_name(meta.cycle)
        atomic_write_bytes(self.path / file, onnx_bytes)
        entry = SnapshotEntry(
            file=file,
            sha256=sha256_bytes(onnx_bytes),
            bytes=len(onnx_bytes),
            cycle=meta.cycle,
            epoch=meta.epoch,
            step=meta.step,
            lr=meta.lr,
            val_accuracy=meta.val_accuracy,
            val_nll=meta.val_nll,
            export_max_abs_diff=export_diff,
            created_at=utc_now(),
        )
        snapshots = [*self.manifest.snapshots, entry]
        self._write(self.manifest.model_copy(update={"snapshots": snapshots}))
        return entry

    def finish(self, changes: dict[str, Any] | None = None) -> Manifest:
        """Mark the run complete, with the manifest fields the end of a run decides
        (`default_m`, `temperature`, additions to `training`); validated as ever."""
        self._write(self.manifest.model_copy(update={**(changes or {}), "state": "complete"}))
        return self.manifest

    def write_extra(self, name: str, data: bytes) -> None:
        """A report file or plot beside the manifest (never one the manifest describes)."""
        if name in (MANIFEST_FILE, SNAPSHOT_DIR, CHECKPOINT_DIR):
            raise ValueError(f"{name} is reserved")
        atomic_write_bytes(self.path / name, data)

    def _write(self, manifest: Manifest) -> None:
        manifest = manifest.model_copy(update={"updated_at": utc_now()})
        # Re-validate: model_copy skips validation, and a bad manifest must never reach disk.
        manifest = Manifest.model_validate(manifest.model_dump())
        write_manifest(self.path, manifest)
        self._manifest = manifest
