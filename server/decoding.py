"""Image decoding for the HTTP routes: off the event loop, a bounded number at a time.

Decoding is the one piece of request work whose cost a client chooses (a 140 KB PNG can
declare 144 megapixels), so it never runs on the event loop: each request's images are
decoded in order by one worker of a small pool of its own, so health checks, metrics and
other requests keep being answered, and at most `workers` decodes run at once however many
clients upload. The pixel limit is checked from each image's header before decoding."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from server.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from server.runtime import Float32Array
from snapens.images import ImageDecodeError, ImageTooLarge, to_model_input
from snapens.manifest import InputSpec


class ImageDecoder:
    def __init__(self, workers: int, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")

    async def rows(
        self, images: list[tuple[str, bytes]], spec: InputSpec, not_image_status: int = 400
    ) -> Float32Array:
        """The images, labelled for error messages, as a [N, C, H, W] batch. An image over
        the pixel limit is a 413; bytes that are no image a 400, or 415 when the client
        sent them as an image upload (`not_image_status`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, self._decode_all, images, spec, not_image_status
        )

    def _decode_all(
        self, images: list[tuple[str, bytes]], spec: InputSpec, not_image_status: int
    ) -> Float32Array:
        rows = []
        for label, data in images:
            try:
                rows.append(to_model_input(data, spec, self.max_pixels))
            except ImageTooLarge as exc:
                raise PayloadTooLarge(f"{label}: {exc}") from None
            except ImageDecodeError as exc:
                error = UnsupportedMediaType if not_image_status == 415 else BadRequest
                raise error(f"{label} is not a readable image: {exc}") from None
        return np.stack(rows)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
