"""Decoding a client's image (snapens.images): whatever Pillow's plugins raise on malformed
bytes is an ImageDecodeError, the one error the server answers with 415 and the batch
scorer writes as a failed row."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from snapens.images import ImageDecodeError, decode_image, probe

STRIP_OFFSETS = bytes([0x11, 0x01])  # TIFF tag 273, little-endian


def tiff_with_strip_offsets_typed(field_type: int) -> bytes:
    """A small RGB TIFF whose StripOffsets tag has another field type than LONG (4):
    DOUBLE (12) or UNDEFINED (7); Pillow's TIFF plugin fails on it with a TypeError."""
    buffer = io.BytesIO()
    Image.new("RGB", (24, 20), (10, 200, 30)).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    tag = data.find(STRIP_OFFSETS)
    data[tag + 2] = field_type
    return bytes(data)


@pytest.mark.parametrize("field_type", [12, 7])
def test_a_tiff_that_fails_inside_pillow_with_a_type_error_is_a_decode_error(
    field_type: int,
) -> None:
    data = tiff_with_strip_offsets_typed(field_type)
    with pytest.raises(TypeError):  # what Pillow itself raises, which used to escape as a 500
        Image.open(io.BytesIO(data)).load()
    with pytest.raises(ImageDecodeError):
        decode_image(data, "RGB", (8, 8))


def test_a_readable_image_decodes_and_probes() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 20), (10, 200, 30)).save(buffer, format="TIFF")
    assert probe(buffer.getvalue()) == ("RGB", (24, 20))
    pixels = decode_image(buffer.getvalue(), "L", (8, 8))
    assert pixels.shape == (8, 8, 1)
