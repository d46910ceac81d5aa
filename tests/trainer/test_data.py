"""Datasets, the split, batching and augmentation."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits as sk_digits

from tests.conftest import ROOT
from trainer.augment import random_crop_flip
from trainer.data import epoch_batches, load_digits, load_image_folder, load_npz, stratified_split
from trainer.errors import UserError


def _png(color: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_folder(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int = 3) -> Path:
    for name, color in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i:04d}.png").write_bytes(_png(color))
    return root


def test_digits_are_the_embedded_sklearn_set(tmp_path: Path) -> None:
    data = load_digits(tmp_path)
    assert data.x.shape == (1797, 1, 8, 8) and data.x.dtype == torch.uint8
    assert data.classes == [str(d) for d in range(10)]
    assert int(data.x.max()) == 16 and data.pixel_range == (0.0, 16.0)
    assert torch.equal(data.x[:, 0], torch.from_numpy(sk_digits().images.astype(np.uint8)))


def test_digits_come_from_the_cache_without_importing_sklearn(tmp_path: Path) -> None:
    first = load_digits(tmp_path)
    assert len(list(tmp_path.glob("digits-*.npz"))) == 1
    probe = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from trainer.data import load_digits\n"
        f"data = load_digits(Path({str(tmp_path)!r}))\n"
        "torch.save({'x': data.x, 'y': data.y, 'classes': data.classes}, sys.argv[1])\n"
        "print('sklearn' in sys.modules)\n"
    )
    saved = tmp_path / "loaded.pt"
    result = subprocess.run(
        [sys.executable, "-c", probe, str(saved)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == "False"  # the cache alone: scikit-learn never imported
    again = torch.load(saved, weights_only=True)
    assert torch.equal(again["x"], first.x) and torch.equal(again["y"], first.y)
    assert again["classes"] == first.classes


@pytest.mark.parametrize("damage", ["corrupt file", "unwritable folder"])
def test_digits_load_past_a_cache_that_cannot_be_used(tmp_path: Path, damage: str) -> None:
    expected = load_digits(tmp_path / "good")
    if damage == "corrupt file":
        cache = tmp_path / "bad"
        cache.mkdir()
        (cache / next((tmp_path / "good").glob("digits-*.npz")).name).write_bytes(b"not an npz")
    else:
        cache = tmp_path / "a file" / "cache"  # its parent is a file: nothing can be written
        cache.parent.write_bytes(b"")
    data = load_digits(cache)
    assert torch.equal(data.x, expected.x) and torch.equal(data.y, expected.y)


def test_image_folder_from_a_directory_decodes_and_caches(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", {"cat": (255, 0, 0), "dog": (0, 0, 255)})
    cache = tmp_path / "cache"
    data = load_image_folder(root, None, cache)
    assert data.classes == ["cat", "dog"]
    assert data.x.shape == (6, 3, 10, 12) and data.x.dtype == torch.uint8
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x[0, 0].float().mean() == 255 and data.x[3, 2].float().mean() == 255
    assert len(list(cache.glob("*.npz"))) == 1
    again = load_image_folder(root, None, cache)  # from the cache
    assert torch.equal(again.x, data.x) and again.classes == data.classes


@pytest.mark.parametrize("damage", ["corrupt file", "missing array", "unwritable folder"])
def test_image_folder_decodes_past_a_cache_that_cannot_be_used(tmp_path: Path, damage: str) -> None:
    root = make_folder(tmp_path / "imgs", {"cat": (255, 0, 0), "dog": (0, 0, 255)})
    expected = load_image_folder(root, None, tmp_path / "good")
    name = next((tmp_path / "good").glob("imagefolder-*.npz")).name
    cache = tmp_path / "bad"
    if damage == "corrupt file":  # e.g. a disk that filled up under an older version
        cache.mkdir()
        (cache / name).write_bytes(b"not an npz")
    elif damage == "missing array":
        cache.mkdir()
        np.savez(cache / name, x=expected.x.numpy())
    else:
        cache = tmp_path / "a file" / "cache"  # its parent is a file: nothing can be written
        cache.parent.write_bytes(b"")
    data = load_image_folder(root, None, cache)
    assert torch.equal(data.x, expected.x) and data.classes == expected.classes
    if damage != "unwritable folder":  # decoded again and the cache rewritten
        again = load_image_folder(root, None, cache)
        assert torch.equal(again.y, expected.y) and again.color_mode == expected.color_mode


def test_image_folder_from_a_zip_with_a_wrapping_folder_and_resize(tmp_path: Path) -> None:
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for label, color in (("airplane", (10, 20, 30)), ("ship", (200, 100, 0))):
            for i in range(2):
                zf.writestr(f"train/{label}/{i:04d}.png", _png(color))
        zf.writestr("train/README.txt", "not an image")
    data = load_image_folder(archive, 8, tmp_path / "cache")
    assert data.classes == ["airplane", "ship"]
    assert data.x.shape == (4, 3, 8, 8)
    assert data.x[2, 0, 0, 0] == 200


def test_image_folder_errors_name_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        load_image_folder(tmp_path / "missing", None, tmp_path / "c")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(_png((0, 0, 0)))
    with pytest.raises(UserError, match="no class folders"):
        load_image_folder(flat, None, tmp_path / "c")
    one = make_folder(tmp_path / "one", {"only": (1, 2, 3)})
    with pytest.raises(UserError, match="at least two"):
        load_image_folder(one, None, tmp_path / "c")
    broken = make_folder(tmp_path / "broken", {"a": (1, 1, 1), "b": (2, 2, 2)})
    (broken / "b" / "9999.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot read image b/9999\.png"):
        load_image_folder(broken, None, tmp_path / "c")
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK but not really")
    with pytest.raises(UserError, match="not a readable zip"):
        load_image_folder(bad_zip, None, tmp_path / "c")


def test_npz_layouts_and_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    path = tmp_path / "a.npz"
    np.savez(path, x=nhwc, y=np.array([0, 1, 2, 0, 1, 2]), classes=np.array(["r", "g", "b"]))
    data = load_npz(path)
    assert data.x.shape == (6, 3, 5, 5) and data.classes == ["r", "g", "b"]
    assert torch.equal(data.x[1, :, 2, 3], torch.from_numpy(nhwc[1, 2, 3]))

    grey = rng.random((4, 6, 6)).astype(np.float32) * 2 - 1
    np.savez(path, x=grey, y=np.array([0, 1, 0, 1]))
    data = load_npz(path)
    assert data.x.shape == (4, 1, 6, 6) and data.color_mode == "L"
    assert data.classes == ["0", "1"]
    assert data.pixel_range == (float(grey.min()), float(grey.max()))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((3, 4, 4))}, r"missing array\(s\) \['y'\]"),
        ({"x": np.zeros((3, 4, 4)), "y": np.array([0, 1])}, "one label per row"),
        ({"x": np.zeros((3, 4, 4)), "y": np.array([0, 0, 0])}, "at least two classes"),
        ({"x": np.zeros((3, 5, 4, 4)), "y": np.array([0, 1, 0])}, "expected \\[N,H,W\\]"),
        ({"x": np.full((2, 4, 4), np.nan), "y": np.array([0, 1])}, "NaN or infinity"),
        (
            {"x": np.zeros((2, 4, 4)), "y": np.array([0, 3]), "classes": np.array(["a", "b"])},
            "label 3",
        ),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=message):
        load_npz(path)


def test_split_is_stratified_fixed_and_disjoint() -> None:
    y = torch.arange(10).repeat_interleave(50)
    train, val = stratified_split(y, 0.1, seed=3)
    assert len(val) == 50 and len(train) == 450
    assert torch.bincount(y[val]).tolist() == [5] * 10
    assert not set(train.tolist()) & set(val.tolist())
    again = stratified_split(y, 0.1, seed=3)
    assert torch.equal(again[1], val)
    assert not torch.equal(stratified_split(y, 0.1, seed=4)[1], val)


def test_epoch_batches_are_fixed_by_seed_and_epoch_and_shard_across_ranks() -> None:
    first = list(epoch_batches(100, 16, seed=1, epoch=0))
    assert len(first) == 6 and all(len(b) == 16 for b in first)
    assert [b.tolist() for b in epoch_batches(100, 16, seed=1, epoch=0)] == [
        b.tolist() for b in first
    ]
    assert [b.tolist() for b in epoch_batches(100, 16, seed=1, epoch=1)] != [
        b.tolist() for b in first
    ]
    ranks = [torch.cat(list(epoch_batches(100, 10, 1, 0, rank=r, world=2))) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 50
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())


def test_crop_flip_shifts_and_mirrors_on_tensors() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    out = random_crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # Each output is a window of the zero-padded input, possibly mirrored.
    for i in range(2):
        padded = torch.nn.functional.pad(x[i, 0], (2, 2, 2, 2))
        windows = [padded[r : r + 4, c : c + 4] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i, 0], w) or torch.equal(out[i, 0], w.flip(1)) for w in windows)
    same = random_crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    outs = {
        random_crop_flip(x, 2, torch.Generator().manual_seed(s))[0].sum().item() for s in range(20)
    }
    assert len(outs) > 1  # crops differ with the randomness


def _bmp(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (value, value, value)).save(buffer, format="BMP")
    return buffer.getvalue()


def test_a_zip_rewritten_with_the_same_size_and_time_is_decoded_again(tmp_path: Path) -> None:
    """cp -p or rsync keep a file's size and mtime: the cache key holds the zip's member
    checksums too, so other pixels are never served from the old cache."""
    path, cache = tmp_path / "data.zip", tmp_path / "cache"

    def write(dark: int, light: int) -> None:
        with zipfile.ZipFile(path, "w") as archive:  # stored: the size depends on names only
            for i in range(4):
                archive.writestr(f"a/{i}.bmp", _bmp(dark))
                archive.writestr(f"b/{i}.bmp", _bmp(light))

    write(0, 255)
    stat = path.stat()
    first = load_image_folder(path, None, cache)
    write(255, 0)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    second = load_image_folder(path, None, cache)
    assert int(first.x[first.y == 0].max()) == 0 and int(second.x[second.y == 0].min()) == 255


def test_a_split_that_leaves_a_class_nothing_to_train_on_is_refused() -> None:
    y = torch.tensor([0] * 20 + [1] * 20 + [2])
    with pytest.raises(
        UserError, match="leaves class 'cat' \\(1 example\\(s\\)\\) nothing to train"
    ):
        stratified_split(y, 0.6, seed=0, classes=["ant", "bee", "cat"])
    train, val = stratified_split(y, 0.4, seed=0)  # one example: it trains, none validates
    assert int((y[train] == 2).sum()) == 1 and int((y[val] == 2).sum()) == 0
