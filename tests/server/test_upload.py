"""Image upload, `POST /v1/models/{name}/images:predict`: multipart files or a raw image body,
converted and resized as the manifest says, and what an upload that is not an image gets."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.server.conftest import LiveServer, png
from tests.snapens.test_images import tiff_with_strip_offsets_typed


def test_image_upload_multipart_and_raw(
    server: LiveServer, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digit_images
    # A larger RGB image: converted to grey and resized to 8×8 as the manifest says.
    big = Image.fromarray((images[2, 0] * 255 / 16).astype(np.uint8)).resize(
        (64, 64), Image.Resampling.NEAREST
    )
    buffer = io.BytesIO()
    big.convert("RGB").save(buffer, format="JPEG", quality=95)
    files = [
        ("file", ("a.png", png(images[0, 0]), "image/png")),
        ("file", ("b.png", png(images[1, 0]), "image/png")),
        ("file", ("c.jpg", buffer.getvalue(), "image/jpeg")),
    ]
    with server.client() as http:
        response = http.post("/v1/models/digits/images:predict?members=true", files=files)
        assert response.status_code == 200, response.text
        assert [p["label"] for p in response.json()["predictions"]] == labels[:3].tolist()
        raw = http.post(
            "/v1/models/digits/images:predict",
            content=png(images[3, 0]),
            headers={"Content-Type": "image/png"},
        )
        assert raw.json()["predictions"][0]["label"] == labels[3]


def test_upload_errors(server: LiveServer) -> None:
    with server.client() as http:
        bad = http.post(
            "/v1/models/digits/images:predict", files=[("file", ("x.png", b"garbage", "image/png"))]
        )
        assert (
            bad.status_code == 415
            and "image 'x.png' is not a readable image" in bad.json()["error"]
        )
        # Bytes on which Pillow's TIFF plugin fails with a TypeError (it was a 500).
        strips = tiff_with_strip_offsets_typed(12)
        for sent in (
            {"files": [("file", ("s.tif", strips, "image/tiff"))]},
            {"content": strips, "headers": {"Content-Type": "image/tiff"}},
        ):
            tiff = http.post("/v1/models/digits/images:predict", **sent)
            assert tiff.status_code == 415 and "not a readable image" in tiff.json()["error"]
        # A multipart body is parsed as it streams, never inflated: a compressed one was
        # "Invalid multipart data" (gzip) or had its encoding ignored (br).
        for encoding in ("gzip", "br"):
            compressed = http.post(
                "/v1/models/digits/images:predict",
                files=[("file", ("a.png", png(np.zeros((8, 8))), "image/png"))],
                headers={"Content-Encoding": encoding},
            )
            assert compressed.status_code == 415, compressed.text
            assert compressed.json()["error"] == (
                f"Content-Encoding '{encoding}' on a multipart upload: expected none (the "
                "images in it are compressed already)"
            )
        wrong = http.post(
            "/v1/models/digits/images:predict",
            content=b"{}",
            headers={"Content-Type": "text/plain"},
        )
        assert wrong.status_code == 415 and "expected multipart/form-data" in wrong.json()["error"]
        unknown = http.post(
            "/v1/models/cats/images:predict", content=b"x", headers={"Content-Type": "image/png"}
        )
        assert unknown.status_code == 404
