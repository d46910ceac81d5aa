"""The binary tensor extension of the Open Inference Protocol: a JSON header of
`Inference-Header-Content-Length` bytes, followed by raw tensor data in the order of
the tensors whose parameters carry `binary_data_size`."""

from __future__ import annotations

import struct

import numpy as np

from server.errors import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"


def split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary data) of a request body."""
    if header_length is None:
        return body, b""
    if not (header_length.isascii() and header_length.isdigit()):  # int() takes "+1_5"
        raise BadRequest(f"{HEADER_LENGTH} must be a byte count, got {header_length!r}")
    length = int(header_length)
    if not 0 < length <= len(body):
        raise BadRequest(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
    return body[:length], body[length:]


def serialize(array: np.ndarray, datatype: str) -> bytes:
    """Raw little-endian bytes; BYTES elements each get a 4-byte length prefix."""
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
