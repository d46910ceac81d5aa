"""Atomic writes of the contract package: a snapshot killed mid-write is never listed, a
failed write keeps the old file, and a tampered snapshot is caught by its checksum."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapens.atomic import atomic_write_bytes, atomic_writer, sha256_file
from snapens.manifest import read_manifest, read_snapshot
from tests.conftest import ROOT

CRASH_DURING_SNAPSHOT = """
import os, sys
from pathlib import Path
import snapens.atomic as atomic
from snapens.folder import ModelFolder, SnapshotMeta

folder = ModelFolder(Path(sys.argv[1]).parent, Path(sys.argv[1]).name)
real_fdopen = os.fdopen

class HalfWriter:
    def __init__(self, handle): self.handle = handle
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        os._exit(137)  # the process dies mid-write, like a SIGKILL
    def fileno(self): return self.handle.fileno()
    def flush(self): pass

atomic.os.fdopen = lambda fd, mode: HalfWriter(real_fdopen(fd, mode))
meta = SnapshotMeta(cycle=3, epoch=3.0, step=30, lr=0.0, val_accuracy=0.5, val_nll=1.0)
folder.add_snapshot(b"x" * 100_000, meta, 0.0)
"""


def test_a_snapshot_killed_mid_write_is_never_listed(
    synthetic_digits: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(synthetic_digits, folder)
    before = read_manifest(folder)
    result = subprocess.run(
        [sys.executable, "-c", CRASH_DURING_SNAPSHOT, str(folder)], cwd=ROOT, check=False
    )
    assert result.returncode == 137
    after = read_manifest(folder)
    assert after.snapshots == before.snapshots  # the half-written file is not listed
    for entry in after.snapshots:
        read_snapshot(folder, entry)
    leftovers = list((folder / "snapshots").glob(".tmp-*"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 50_000
    assert not (folder / "snapshots" / "003.onnx").read_bytes().startswith(b"x")


def test_atomic_writer_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"new, partial")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_tampered_snapshot_is_detected(synthetic_digits: Path, tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(synthetic_digits, folder)
    entry = read_manifest(folder).snapshots[0]
    path = folder / entry.file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    from snapens.manifest import ManifestError

    with pytest.raises(ManifestError, match="does not match the manifest"):
        read_snapshot(folder, entry)
    assert sha256_file(path) != entry.sha256
