"""Decoding images to the pixels a model takes: one implementation for the trainer's
image-folder datasets, the server's upload route and the batch scorer."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from server.manifest import InputSpec

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
GREY_MODES = frozenset({"L", "1", "I", "I;16", "LA"})


class ImageDecodeError(ValueError):
    """Bytes that are not an image Pillow can read."""


def probe(data: bytes) -> tuple[str, tuple[int, int]]:
    """(color mode "L" or "RGB", (width, height)) of an encoded image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return ("L" if img.mode in GREY_MODES else "RGB"), img.size
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image format Pillow can read") from None
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(str(exc)) from None


def decode_image(
    data: bytes, color_mode: str, size: tuple[int, int] | None
) -> npt.NDArray[np.uint8]:
    """HWC uint8 pixels in `color_mode`, resized bilinearly to `size` (width, height) if given."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            img = opened.convert(color_mode)
            if size is not None and img.size != size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image format Pillow can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(str(exc)) from None
    return array[:, :, None] if array.ndim == 2 else array


def to_model_input(data: bytes, spec: InputSpec) -> npt.NDArray[np.float32]:
    """An encoded image as the model's input row [C, H, W]: decoded in the manifest's color
    mode, resized to its H×W, and mapped from 0..255 onto its pixel range."""
    pixels = decode_image(data, spec.color_mode, (spec.width, spec.height))
    low, high = spec.pixel_range
    chw = pixels.transpose(2, 0, 1).astype(np.float32)
    return low + (high - low) / 255.0 * chw
