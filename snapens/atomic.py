"""Crash-safe file writes: write under a temporary name, flush, fsync, rename.

A reader that opens the final name sees either the old file or the complete new
one, never a partial write.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"


def new_file_mode() -> int:
    """0o666 less the process umask, the mode open() would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(directory: Path) -> None:
    """Make a rename or creation in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` atomically when the block exits cleanly.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp creates 0600; readers may run as another user
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries left behind by a writer that was killed mid-write."""
    if directory.is_dir():
        for leftover in directory.glob(TEMP_PREFIX + "*"):
            leftover.unlink(missing_ok=True)
