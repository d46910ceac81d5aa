"""Inputs of the batch scorer, read in fixed-size chunks so memory stays flat whatever
their size:

- `.npy` / `.npz` arrays shaped as the model's input ([N, C, H, W], or [N, H, W] for one
  channel), streamed from the file without loading it whole;
- a folder or `.zip` of images (recursive), decoded and resized as the manifest says;
- a Parquet or CSV file with a column of image paths (relative to the file's folder).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from server.runtime import Float32Array
from snapens.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    is_image_name,
    to_model_input,
)
from snapens.manifest import InputSpec

ARRAY_SUFFIXES = (".npy", ".npz")
TABLE_SUFFIXES = (".parquet", ".csv")


class InputError(ValueError):
    """An input that cannot be scored as a whole (wrong type, shape, empty)."""


@dataclass(frozen=True)
class Chunk:
    index: int
    keys: list[Any]  # row ids or image paths
    raw: Any  # an array of rows, or the names to read


@dataclass(frozen=True)
class Decoded:
    x: Float32Array  # the rows that decoded, [n_ok, C, H, W]
    ok: np.ndarray  # bool per key
    errors: list[str | None]


def valid_rows(x: np.ndarray, spec: InputSpec) -> Decoded:
    """Rows of an array as float32; a row holding NaN or infinity, or pixels outside the
    model's pixel_range (as the server refuses them), fails with an error."""
    flat = x.reshape(len(x), -1)
    lows, highs = flat.min(axis=1).tolist(), flat.max(axis=1).tolist()  # a NaN reaches both
    errors = [
        "row contains NaN or infinity"
        if not (math.isfinite(low) and math.isfinite(high))
        else None
        if (outside := spec.pixels_outside(low, high)) is None
        else f"row has {outside}"
        for low, high in zip(lows, highs, strict=True)
    ]
    ok = np.array([error is None for error in errors], dtype=bool)
    rows = x if ok.all() else x[ok]  # no copy in the common case
    return Decoded(np.ascontiguousarray(rows, dtype=np.float32), ok, errors)


def _fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"input": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class ArraySource:
    key_name = "id"

    def __init__(self, path: Path, spec: InputSpec) -> None:
        self.path = path
        self.spec = spec
        self._stack = _open_array(path)
        handle = self._stack[-1]
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        want = tuple(spec.shape[1:])
        if len(shape) == 3 and spec.channels == 1 and shape[1:] == want[1:]:
            shape = (shape[0], 1, *shape[1:])
        if len(shape) != 4 or tuple(shape[1:]) != want:
            raise InputError(
                f"{path}: array of shape {list(shape)}; the model takes "
                f"[N, {want[0]}, {want[1]}, {want[2]}]"
            )
        if fortran or dtype.kind not in "biuf" or dtype.hasobject:
            raise InputError(
                f"{path}: expected a C-ordered numeric array, got {dtype} "
                f"{'(Fortran order)' if fortran else ''}".strip()
            )
        self.dtype = dtype
        self.shape = shape
        self.total = int(shape[0])
        self.row_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    def fingerprint(self) -> dict[str, Any]:
        return {**_fingerprint(self.path), "kind": "array"}

    def chunks(self, rows: int, skip: set[int]) -> Iterator[Chunk]:
        handle = self._stack[-1]
        for index, start in enumerate(range(0, self.total, rows)):
            n = min(rows, self.total - start)
            if index in skip:
                handle.seek(n * self.row_bytes, io.SEEK_CUR)
                continue
            data = handle.read(n * self.row_bytes)
            if len(data) != n * self.row_bytes:
                raise InputError(f"{self.path}: the file ends before row {start + n}")
            raw = np.frombuffer(data, dtype=self.dtype).reshape(n, *self.shape[1:])
            yield Chunk(index, list(range(start, start + n)), raw)

    def decode(self, chunk: Chunk, pool: Executor) -> Decoded:
        return valid_rows(chunk.raw, self.spec)

    def close(self) -> None:
        for handle in reversed(self._stack):
            handle.close()


def _open_array(path: Path) -> list[Any]:
    """Open handles, the last positioned at the array's .npy header."""
    if path.suffix == ".npy":
        return [open(path, "rb")]  # closed by ArraySource.close
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InputError(f"{path}: not a readable .npz file") from None
    members = [n for n in archive.namelist() if n.endswith(".npy")]
    name = "x.npy" if "x.npy" in members else (members[0] if len(members) == 1 else None)
    if name is None:
        archive.close()
        raise InputError(f"{path}: expected an array named x (or a single array), found {members}")
    return [archive, archive.open(name)]


@dataclass
class ImageSource:
    """Encoded images: files of a folder, members of a zip, or paths listed in a table."""

    origin: Path
    names: list[str] | None  # all names, when known up front
    read: Callable[[str], bytes]
    spec: InputSpec
    batches: Callable[[], Iterator[list[str | None]]] | None = None  # streamed names (tables)
    extra: dict[str, Any] = field(default_factory=dict)
    closer: Callable[[], None] | None = None
    key_name: str = "path"
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    @property
    def total(self) -> int | None:
        return len(self.names) if self.names is not None else self.extra.get("rows")

    def fingerprint(self) -> dict[str, Any]:
        return {**_fingerprint(self.origin), "kind": "images", **self.extra}

    def chunks(self, rows: int, skip: set[int]) -> Iterator[Chunk]:
        if self.names is not None:
            for index, start in enumerate(range(0, len(self.names), rows)):
                if index not in skip:
                    names = self.names[start : start + rows]
                    yield Chunk(index, names, names)
            return
        assert self.batches is not None
        buffer: list[str | None] = []
        index = 0
        for batch in self.batches():
            buffer += batch
            while len(buffer) >= rows:
                head, buffer = buffer[:rows], buffer[rows:]
                if index not in skip:
                    yield Chunk(index, head, head)
                index += 1
        if buffer and index not in skip:
            yield Chunk(index, buffer, buffer)

    def decode(self, chunk: Chunk, pool: Executor) -> Decoded:
        def one(name: str | None) -> Float32Array | str:
            if not name:
                return "empty path"
            try:
                return to_model_input(self.read(name), self.spec, self.max_pixels)
            except ImageDecodeError as exc:
                return f"not a readable image: {exc}"
            except OSError as exc:
                return f"cannot read: {exc.strerror or exc}"
            except KeyError:
                return "no such member in the archive"

        results = list(pool.map(one, chunk.raw))
        ok = np.array([not isinstance(r, str) for r in results], dtype=bool)
        rows = [r for r in results if not isinstance(r, str)]
        x = np.stack(rows) if rows else np.zeros((0, *self.spec.shape[1:]), np.float32)
        errors = [r if isinstance(r, str) else None for r in results]
        return Decoded(x.astype(np.float32, copy=False), ok, errors)

    def close(self) -> None:
        if self.closer is not None:
            self.closer()


def _folder(path: Path, spec: InputSpec) -> ImageSource:
    names = sorted(
        PurePosixPath(os.path.relpath(p, path)).as_posix()
        for p in path.rglob("*")
        if p.is_file() and is_image_name(str(p.relative_to(path)))
    )
    return ImageSource(path, names, lambda name: (path / name).read_bytes(), spec)


def _zip(path: Path, spec: InputSpec) -> ImageSource:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InputError(f"{path}: not a readable zip file") from None
    names = sorted(
        i.filename for i in archive.infolist() if not i.is_dir() and is_image_name(i.filename)
    )
    return ImageSource(path, names, archive.read, spec, closer=archive.close)


def _check_path_column(path: Path, column: str, kind: pa.DataType) -> None:
    """A Parquet column of image paths is strings (a CSV's is read as strings)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(f"{path}: column {column!r} holds {kind}, not image paths (strings)")


def _table(path: Path, spec: InputSpec, column: str) -> ImageSource:
    base = path.parent

    def read(name: str) -> bytes:
        target = Path(name)
        return (target if target.is_absolute() else base / target).read_bytes()

    try:
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            rows: int | None = parquet.metadata.num_rows
            if column in names:
                _check_path_column(path, column, parquet.schema_arrow.field(column).type)

            def batches() -> Iterator[list[str | None]]:
                for batch in parquet.iter_batches(batch_size=4096, columns=[column]):
                    yield batch.column(0).cast(pa.string()).to_pylist()
        else:
            names = pacsv.open_csv(path).schema.names
            rows = None

            def batches() -> Iterator[list[str | None]]:
                options = pacsv.ConvertOptions(
                    column_types={column: pa.string()}, include_columns=[column]
                )
                for batch in pacsv.open_csv(path, convert_options=options):
                    yield batch.column(0).to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable {path.suffix[1:]} file: {exc}") from None
    if column not in names:
        raise InputError(
            f"{path}: no column {column!r} of image paths (columns: {', '.join(names)}); "
            "name it with --column"
        )
    return ImageSource(
        path, None, read, spec, batches=batches, extra={"column": column, "rows": rows}
    )


def open_source(
    path: Path, spec: InputSpec, column: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> ArraySource | ImageSource:
    """The scorer's reader for `path`, or one clear InputError; images over `max_pixels`
    fail as rows, before they are decoded."""
    if not path.exists():
        raise InputError(f"--input {path}: no such file or folder")
    if path.is_dir():
        source: ArraySource | ImageSource = _folder(path, spec)
    elif path.suffix in ARRAY_SUFFIXES:
        source = ArraySource(path, spec)
    elif path.suffix.lower() == ".zip":
        source = _zip(path, spec)
    elif path.suffix in TABLE_SUFFIXES:
        source = _table(path, spec, column)
    else:
        raise InputError(
            f"--input {path}: unknown file type; expected a folder or .zip of images, "
            ".npy/.npz arrays, or a .parquet/.csv file with a column of image paths"
        )
    if isinstance(source, ImageSource):
        source.max_pixels = max_pixels
    if source.total == 0:
        source.close()
        raise InputError(f"--input {path}: empty input, nothing to score")
    return source
