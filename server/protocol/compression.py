"""Compressed request bodies: `Content-Encoding: gzip` or `deflate`, as tritonclient can
send them, inflated with a bound so a small body cannot expand past the body limit."""

from __future__ import annotations

import zlib

from server.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

ENCODINGS = {"gzip": 31, "deflate": 15}  # zlib's wbits for each: gzip and zlib headers


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """`body` as the client meant it: inflated when `encoding` (the Content-Encoding header)
    says so, and at most `limit` bytes once inflated (413 beyond)."""
    name = "identity" if encoding is None else encoding.lower()
    if name == "identity":
        return body
    if name not in ENCODINGS:
        raise UnsupportedMediaType(f"Content-Encoding {name!r}: expected gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=ENCODINGS[name])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {name} data: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"the inflated body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise BadRequest(f"the body is truncated {name} data: the stream does not end")
    if inflater.unused_data:
        raise BadRequest(f"the body has {len(inflater.unused_data)} bytes after its {name} stream")
    return data


def require_identity(encoding: str | None, what: str) -> None:
    """Refuse a Content-Encoding on a body read as it streams, which is not inflated."""
    if encoding is not None and encoding.lower() != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} on {what}: expected none (the images in it are "
            "compressed already)"
        )
