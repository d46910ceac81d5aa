"""Datasets as in-memory tensors: sklearn's digits, image folders (a directory or a .zip
of class folders) and npz arrays; the first two kept in a uint8 cache after the first load.

Everything is held as one [N, C, H, W] tensor so an epoch is never bound by decoding.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from snapens.atomic import TEMP_PREFIX, atomic_writer
from snapens.images import ImageDecodeError, decode_image, is_image_name, probe
from snapens.validation import check_class_names
from trainer.choices import DatasetKind
from trainer.errors import UserError

CACHE_VERSION = 2  # 2: a folder whose first image is grey but not all are is decoded in colour
MAX_IMAGE_FILE_BYTES = 64 * 1024 * 1024  # one encoded training image
ABANDONED_AFTER_S = 3600.0
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor  # [N, C, H, W], uint8 or float32, raw pixels
    y: torch.Tensor  # [N] int64
    classes: list[str]
    pixel_range: tuple[float, float]
    color_mode: str  # "L" or "RGB"
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)


def data_identity(data: Dataset) -> dict[str, Any]:
    """What a resumed run checks its data against: the classes, the image shape, the number
    of examples and a SHA-256 of the pixels and labels (a file changed in place, or another
    file at the same path, differs here)."""
    digest = hashlib.sha256()
    for tensor in (data.x, data.y):
        digest.update(np.ascontiguousarray(tensor.numpy()).data)
    return {
        "classes": list(data.classes),
        "input_shape": list(data.input_shape),
        "examples": len(data.y),
        "sha256": digest.hexdigest(),
    }


def load_digits(cache_dir: Path | None = None) -> Dataset:
    """The 8×8 handwritten digits that ship inside scikit-learn (values 0..16). They are
    kept in the dataset cache after the first load: importing scikit-learn takes about 3 s
    of every run on the default, reading the cache a few milliseconds. A cache that cannot
    be read or written is passed over (the digits load as before)."""
    try:
        version = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "--dataset digits needs scikit-learn (pip install 'snapens[train]')"
        ) from None
    cache = (cache_dir or default_cache_dir()) / f"digits-{CACHE_VERSION}-sklearn-{version}.npz"
    cached = _read_cache(cache, ("x", "y", "classes"))
    if cached is not None:
        x, y, classes = cached["x"], cached["y"], [str(c) for c in cached["classes"]]
    else:
        from sklearn.datasets import load_digits as sk_digits

        bunch = sk_digits()
        x = np.ascontiguousarray(bunch.images.astype(np.uint8)[:, None])
        y = bunch.target.astype(np.int64)
        classes = [str(d) for d in bunch.target_names]
        _write_cache(cache, x=x, y=y, classes=np.array(classes))
    return Dataset(
        torch.from_numpy(x), torch.from_numpy(y), classes, (0.0, 16.0), "L", "sklearn digits"
    )


# Image folders -------------------------------------------------------------------------


@dataclass(frozen=True)
class _ImageIndex:
    classes: list[str]
    items: list[tuple[str, int]]  # (member name or path, class index)
    read: Callable[[str], bytes]


def _class_items(names: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Map 'class/.../file.jpg' names to classes, skipping a single wrapping folder."""
    images = [n for n in names if is_image_name(n)]
    parts = [PurePosixPath(n).parts for n in images]
    # A zip of "train/airplane/x.jpg" wraps the class folders in one top folder: skip it.
    while parts and all(len(p) > 2 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    nested = [(p[0], n) for p, n in zip(parts, images, strict=True) if len(p) >= 2]
    classes = sorted({c for c, _ in nested})
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, [(n, lookup[c]) for c, n in sorted(nested, key=lambda item: item[1])]


def _index_directory(root: Path) -> _ImageIndex:
    names = [str(PurePosixPath(*p.relative_to(root).parts)) for p in root.rglob("*") if p.is_file()]
    classes, items = _class_items(names)

    def read(name: str) -> bytes:
        size = (root / name).stat().st_size
        if size > MAX_IMAGE_FILE_BYTES:
            raise ImageDecodeError(
                f"{size} bytes; an image file may hold at most {MAX_IMAGE_FILE_BYTES}"
            )
        return (root / name).read_bytes()

    return _ImageIndex(classes, items, read)


def _index_zip(path: Path) -> tuple[_ImageIndex, zipfile.ZipFile]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UserError(f"--data {path}: not a readable zip file") from None
    infos = [info for info in archive.infolist() if not info.is_dir()]
    for info in infos:  # before anything is inflated: zipfile reads no more than declared
        if is_image_name(info.filename) and info.file_size > MAX_IMAGE_FILE_BYTES:
            archive.close()
            raise UserError(
                f"--data {path}: {info.filename} declares {info.file_size} bytes; an image "
                f"file may hold at most {MAX_IMAGE_FILE_BYTES}"
            )
    classes, items = _class_items([info.filename for info in infos])

    def read(name: str) -> bytes:
        try:
            return archive.read(name)
        except (
            zipfile.BadZipFile,
            RuntimeError,
            NotImplementedError,
            OSError,
            EOFError,
            zlib.error,
        ) as exc:
            # a bad CRC, an encrypted member, a compression method zipfile lacks, ...
            raise ImageDecodeError(f"cannot be read from the zip ({exc})") from None

    return _ImageIndex(classes, items, read), archive


def _cache_key(path: Path, image_size: int | None) -> str:
    stat = path.stat()
    ident = f"{CACHE_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{image_size}"
    if path.is_dir():  # a folder's mtime misses edits inside its folders: include them all
        ident += "|" + "|".join(
            f"{p}:{p.stat().st_mtime_ns}" for p in sorted(path.rglob("*")) if p.is_dir()
        )
    elif zipfile.is_zipfile(path):  # a zip rewritten keeping size and mtime (cp -p, rsync)
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as archive:
            ident += "|" + "|".join(
                f"{i.filename}:{i.CRC}:{i.file_size}" for i in archive.infolist()
            )  # the central directory only: nothing is inflated
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _read_cache(cache: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None where the file is missing, unreadable or incomplete: the
    dataset is then loaded from its source again and the cache rewritten."""
    try:
        with np.load(cache, allow_pickle=False) as npz:
            return {key: npz[key] for key in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _write_cache(cache: Path, **arrays: Any) -> None:  # numpy arrays
    """Write the cache atomically; one that cannot be written (a read-only home, a full
    disk) is passed over, as the data are already in memory."""
    with contextlib.suppress(OSError):
        _remove_abandoned_temporaries(cache.parent)
    with contextlib.suppress(OSError), atomic_writer(cache) as handle:
        np.savez(handle, **arrays)


def _remove_abandoned_temporaries(directory: Path) -> None:
    """Cache files a killed run was writing. The cache may be shared by runs at once, so
    only those untouched for an hour are taken as abandoned."""
    if not directory.is_dir():
        return
    now = time.time()
    for leftover in directory.glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > ABANDONED_AFTER_S:
                leftover.unlink()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "snapens" / "datasets"


def _decode_all(
    index: _ImageIndex, mode: str, size: tuple[int, int]
) -> tuple[list[np.ndarray], bool]:
    """Every image in `mode` at `size`, and, decoding in grey, whether any of them is in
    colour (in colour there is nothing to find out: no image header is read twice)."""

    def decode(item: tuple[str, int]) -> tuple[np.ndarray, bool]:
        try:
            data = index.read(item[0])
            return decode_image(data, mode, size), mode == "L" and probe(data)[0] == "RGB"
        except ImageDecodeError as exc:
            raise UserError(f"cannot read image {item[0]}: {exc}") from None

    # Pillow releases the GIL while decoding, so threads overlap the work.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        decoded = list(pool.map(decode, index.items, chunksize=256))
    return [array for array, _ in decoded], any(colour for _, colour in decoded)


def load_image_folder(path: Path, image_size: int | None, cache_dir: Path | None) -> Dataset:
    """Decode a folder or .zip of class folders once; later runs load the uint8 cache."""
    if not path.exists():
        raise UserError(f"--data {path}: no such file or folder")
    cache = (cache_dir or default_cache_dir()) / f"imagefolder-{_cache_key(path, image_size)}.npz"
    cached = _read_cache(cache, ("x", "y", "classes", "color_mode"))
    if cached is not None:
        return Dataset(
            torch.from_numpy(cached["x"]),
            torch.from_numpy(cached["y"]),
            [str(c) for c in cached["classes"]],
            (0.0, 255.0),
            str(cached["color_mode"]),
            f"image folder {path}",
        )

    archive = None
    if path.is_dir():
        index = _index_directory(path)
    elif path.suffix.lower() == ".zip":
        index, archive = _index_zip(path)
    else:
        raise UserError(f"--data {path}: expected a folder or a .zip of class folders")
    try:
        if not index.items:
            raise UserError(
                f"--data {path}: no class folders with images (expected class_name/image.jpg)"
            )
        if len(index.classes) < 2:
            raise UserError(
                f"--data {path}: found only class {index.classes[0]!r}; "
                "a classifier needs at least two"
            )
        first_name = index.items[0][0]
        try:
            mode, first_size = probe(index.read(first_name))
        except ImageDecodeError as exc:
            raise UserError(f"cannot read image {first_name}: {exc}") from None
        size = (image_size, image_size) if image_size else first_size
        arrays, colour = _decode_all(index, mode, size)
        if mode == "L" and colour:  # the first image was grey, not all are: keep the colour
            mode = "RGB"
            arrays, _ = _decode_all(index, mode, size)
    finally:
        if archive is not None:
            archive.close()

    x = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
    y = np.array([label for _, label in index.items], dtype=np.int64)
    _write_cache(cache, x=x, y=y, classes=np.array(index.classes), color_mode=np.array(mode))
    return Dataset(
        torch.from_numpy(x),
        torch.from_numpy(y),
        index.classes,
        (0.0, 255.0),
        mode,
        f"image folder {path}",
    )


# npz arrays ----------------------------------------------------------------------------


def load_npz(path: Path) -> Dataset:
    """Arrays `x` ([N,H,W], [N,C,H,W] or [N,H,W,C]), `y` (class indices), optional `classes`."""
    if not path.is_file():
        raise UserError(f"--data {path}: no such file")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise UserError(f"--data {path}: one array (.npy); expected a .npz of arrays x and y")
        with npz:
            missing = {"x", "y"} - set(npz.files)
            if missing:
                raise UserError(
                    f"--data {path}: missing array(s) {sorted(missing)}; expected x and y"
                )
            # The arrays load lazily: reading them is where an object array is refused.
            x, y = npz["x"], npz["y"]
            names = npz["classes"] if "classes" in npz.files else None
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise UserError(f"--data {path}: not a readable .npz file ({exc})") from None
    classes = None if names is None else _class_names(path, names)
    if x.dtype.kind not in "uif":
        raise UserError(
            f"--data {path}: x must hold numbers (uint8 or float pixels), got {x.dtype}"
        )
    if len(x) == 0 or 0 in x.shape:
        raise UserError(
            f"--data {path}: x has shape {x.shape}; expected at least one image, of at least "
            "one pixel"
        )
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(
            f"--data {path}: x has shape {x.shape}; "
            "expected [N,H,W], [N,C,H,W] or [N,H,W,C] with C 1 or 3"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(
            f"--data {path}: y must be one label per row of x ({len(x)}), got shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise UserError(f"--data {path}: y must hold non-negative integer class indices")
    if classes is not None:
        num_classes = len(classes)
        if y.max() >= num_classes:
            raise UserError(f"--data {path}: label {int(y.max())} but only {num_classes} classes")
    else:  # every index up to the largest is a class: a gap is a mistake, not a class
        num_classes = int(y.max()) + 1
        unused = num_classes - len(np.unique(y))
        if unused:
            raise UserError(
                f"--data {path}: labels run to {num_classes - 1} but {unused} of the indices "
                "below have no example; number the classes 0, 1, ... or name them in `classes`"
            )
    if num_classes < 2:
        raise UserError(
            f"--data {path}: a classifier needs at least two classes, found {num_classes}"
        )
    if x.dtype == np.uint8:
        tensor, pixel_range = torch.from_numpy(np.ascontiguousarray(x)), (0.0, 255.0)
    else:
        data = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(data).all():
            raise UserError(f"--data {path}: x contains NaN or infinity")
        low, high = float(data.min()), float(data.max())
        tensor, pixel_range = torch.from_numpy(data), (low, high if high > low else low + 1.0)
    return Dataset(
        tensor,
        torch.from_numpy(y.astype(np.int64)),
        classes or [str(i) for i in range(num_classes)],
        pixel_range,
        "L" if x.shape[1] == 1 else "RGB",
        f"npz {path}",
    )


def _class_names(path: Path, names: np.ndarray) -> list[str]:
    """The npz's `classes`: one distinct, non-empty name per class, at most MAX_CLASSES."""
    if names.ndim != 1 or names.dtype.kind not in "UiuS" or not 2 <= len(names) <= MAX_CLASSES:
        raise UserError(
            f"--data {path}: classes must be a list of 2 to {MAX_CLASSES} names, got "
            f"{names.dtype} of shape {names.shape}"
        )
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names.tolist()]
    try:
        return check_class_names(classes)
    except ValueError as exc:
        raise UserError(f"--data {path}: {exc}") from None


def load_dataset(
    kind: DatasetKind, path: Path | None, image_size: int | None, cache_dir: Path | None
) -> Dataset:
    if kind is DatasetKind.DIGITS:
        return load_digits(cache_dir)
    assert path is not None  # the config requires --data for the other kinds
    if kind is DatasetKind.IMAGEFOLDER:
        return load_image_folder(path, image_size, cache_dir)
    return load_npz(path)


def stratified_split(
    y: torch.Tensor, val_fraction: float, seed: int, classes: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-seed split keeping each class's share: (train indices, validation indices)."""
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for cls in torch.unique(y):
        members = torch.nonzero(y == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = round(len(members) * val_fraction)
        if n_val == len(members) and len(y) > n_val:  # the class would never be trained on
            raise UserError(
                f"--val-fraction {val_fraction} leaves class "
                f"{classes[int(cls)] if classes else int(cls)!r} ({len(members)} example(s)) "
                "nothing to train on: lower it, or add examples of that class"
            )
        val.append(members[:n_val])
        train.append(members[n_val:])
    train_idx, val_idx = torch.cat(train).sort().values, torch.cat(val).sort().values
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise UserError(f"--val-fraction {val_fraction} leaves an empty split of {len(y)} examples")
    return train_idx, val_idx


def stratified_subset(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Exactly `n` indices of `y` (sorted), each class's share kept (its quota rounded down,
    the examples left over going to the largest remainders), picked with a fixed seed. With
    quotas that come out whole, the picks are those of stratified_split's validation side."""
    classes, counts = torch.unique(y, return_counts=True)
    exact = counts.double() * n / len(y)
    quota = exact.floor().long()
    left = n - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:left]] += 1
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for cls, take in zip(classes, quota.tolist(), strict=True):
        members = torch.nonzero(y == cls).flatten()
        kept.append(members[torch.randperm(len(members), generator=generator)][:take])
    return torch.cat(kept).sort().values


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> Iterator[torch.Tensor]:
    """This rank's batches of one epoch: a permutation fixed by (seed, epoch), so a resumed
    run sees exactly the batches the uninterrupted run would have. Drops the last partial batch."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    per_rank = n // world
    mine = order[rank * per_rank : (rank + 1) * per_rank]
    for start in range(0, per_rank - batch_size + 1, batch_size):
        yield mine[start : start + batch_size]


def iterations_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return (n // world) // batch_size
