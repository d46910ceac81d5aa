"""Decoding images to the pixels a model takes: one implementation for the trainer's
image-folder datasets, the server's upload route and the batch scorer.

An image's size is read from its header and checked against a pixel limit before any
pixel is decoded (a 140 KB PNG can hold 12000×12000 grey pixels), and JPEGs are decoded
at the smallest DCT scale that is still at least the target size (Pillow's draft mode)."""

from __future__ import annotations

import io
import warnings
from pathlib import PurePosixPath

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from snapens.manifest import InputSpec

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# The formats of those suffixes, the only ones decoded: Pillow's other plugins (ICO, PCX,
# ...) are code a client's bytes never need to reach.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
FORMAT_NAMES = "PNG, JPEG, BMP, GIF, WebP or TIFF"
GREY_MODES = frozenset({"L", "1", "I", "I;16", "LA"})
# 25 megapixels: a 48 MP phone photo is refused, a 5000×5000 scan is not.
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000
# Pillow warns on opening an image over its own guard (89 MP); the limit above is checked
# right after, from the same header, so the warning would only repeat the refusal.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def is_image_name(name: str) -> bool:
    """A file name, relative and '/'-separated, that names an image to read: an image
    suffix, and no hidden or macOS-metadata folder or file on its path."""
    path = PurePosixPath(name)
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(
        part.startswith((".", "__MACOSX")) for part in path.parts
    )


class ImageDecodeError(ValueError):
    """Bytes that are not an image Pillow can read."""


class ImageTooLarge(ImageDecodeError):
    """An image whose header declares more pixels than the limit."""


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}×{height} = {width * height} pixels exceeds the limit of {max_pixels} pixels"
        )


def probe(data: bytes) -> tuple[str, tuple[int, int]]:
    """(color mode "L" or "RGB", (width, height)) of an encoded image."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            return ("L" if img.mode in GREY_MODES else "RGB"), img.size
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not a {FORMAT_NAMES} image") from None
    except Exception as exc:  # see decode_image: any failure here is the image's
        raise ImageDecodeError(str(exc) or type(exc).__name__) from None


def decode_image(
    data: bytes,
    color_mode: str,
    size: tuple[int, int] | None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> npt.NDArray[np.uint8]:
    """HWC uint8 pixels in `color_mode`, resized bilinearly to `size` (width, height) if
    given; ImageTooLarge, before decoding, if the header declares over `max_pixels`."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as opened:
            _check_pixels(opened.size, max_pixels)
            if size is not None:
                opened.draft(color_mode, size)  # JPEG only: decode at a reduced scale
            img = opened.convert(color_mode)
            if size is not None and img.size != size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not a {FORMAT_NAMES} image") from None
    except Image.DecompressionBombError:  # Pillow's own guard, far above any limit here
        raise ImageTooLarge(
            f"the header declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels; "
            f"the limit is {max_pixels} pixels"
        ) from None
    except ImageDecodeError:
        raise
    except Exception as exc:
        # Pillow's plugins raise what their parsing hits on malformed data: OSError,
        # ValueError and SyntaxError, and also TypeError (a TIFF whose StripOffsets tag is
        # typed DOUBLE), struct.error, IndexError... Whatever it is, the bytes are at fault.
        raise ImageDecodeError(str(exc) or type(exc).__name__) from None
    return array[:, :, None] if array.ndim == 2 else array


def to_model_input(
    data: bytes, spec: InputSpec, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> npt.NDArray[np.float32]:
    """An encoded image as the model's input row [C, H, W]: decoded in the manifest's color
    mode, resized to its H×W, and mapped from 0..255 onto its pixel range."""
    pixels = decode_image(data, spec.color_mode, (spec.width, spec.height), max_pixels)
    low, high = spec.pixel_range
    chw = pixels.transpose(2, 0, 1).astype(np.float32)
    return low + (high - low) / 255.0 * chw
