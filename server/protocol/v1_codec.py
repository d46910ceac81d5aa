"""The friendly JSON API (KServe v1 style) without HTTP: a request's instances to the
model's input batch, an upload's parts checked, and an ensemble's answer to predictions.

An instance is a nested list of pixels or an encoded image, `{"b64": "..."}`. Decoding
is in two steps around the image decoder (server.decoding, off the event loop):
`decode_instances` checks every instance and turns pixel lists into rows, leaving the
images' bytes to decode; `assemble` puts the rows and the decoded images back in order
as one batch. The routes (server.protocol.v1_endpoints) run both inside `client_input`,
so any failure is the client's: a 4xx, never a 5xx.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from python_multipart.multipart import parse_options_header

from server.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from server.model import Answer
from server.protocol.tensors import check_batch
from server.protocol.v1_models import ClassScore, MemberPrediction, Prediction, PredictResponse
from server.runtime import Float32Array
from snapens.manifest import InputSpec

WHAT = "instances"  # how errors name a request's batch


@dataclass(frozen=True)
class Instances:
    """A request's instances by position: pixel rows decoded, encoded images not yet."""

    rows: dict[int, npt.NDArray[np.float64]]
    images: dict[int, bytes]

    def labelled_images(self) -> list[tuple[str, bytes]]:
        """The images to decode, each labelled for error messages."""
        return [(f"instance {i}", data) for i, data in self.images.items()]


def decode_instances(instances: list[Any], spec: InputSpec, max_rows: int) -> Instances:
    """Check each instance against a model taking `spec`: a b64 image's bytes, or a pixel
    list's row. At most `max_rows` instances (413 beyond)."""
    if len(instances) > max_rows:
        raise PayloadTooLarge(f"{WHAT} has {len(instances)} rows; at most {max_rows} per request")
    images = {
        i: _b64_image(instance, f"instance {i}")
        for i, instance in enumerate(instances)
        if isinstance(instance, dict)
    }
    rows = {
        i: _pixel_row(instance, f"instance {i}", spec)
        for i, instance in enumerate(instances)
        if i not in images
    }
    return Instances(rows, images)


def assemble(
    instances: Instances, decoded: Float32Array | None, spec: InputSpec, max_rows: int
) -> Float32Array:
    """The batch: pixel rows and `decoded` (the images, decoded in the order of
    `labelled_images()`; None when there are none) in the instances' order."""
    rows: dict[int, np.ndarray] = dict(instances.rows)
    if instances.images:
        if decoded is None:
            raise ValueError("the instances' images were not decoded")
        rows |= dict(zip(instances.images, decoded, strict=True))
    return check_batch(np.stack([rows[i] for i in range(len(rows))]), spec, max_rows, WHAT)


def _b64_image(instance: dict[str, Any], what: str) -> bytes:
    if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
        raise BadRequest(f'{what}: expected {{"b64": "<base64 image>"}} or a nested list of pixels')
    try:
        return base64.b64decode(instance["b64"], validate=True)
    except binascii.Error:
        raise BadRequest(f"{what}: b64 is not valid base64") from None


def _pixel_row(instance: Any, what: str, spec: InputSpec) -> npt.NDArray[np.float64]:
    want = f"numbers in a nested list shaped {spec.shape[1:]}"
    try:
        row = np.asarray(instance)
    except ValueError:  # ragged lists
        raise BadRequest(f"{what}: expected {want}; its lists differ in length") from None
    if row.dtype.kind not in "iuf":  # booleans, strings, objects (an int too large for int64)
        raise BadRequest(f"{what}: expected {want}")
    if row.ndim == 2 and spec.channels == 1:
        row = row[None]
    if list(row.shape) != spec.shape[1:]:
        raise BadRequest(f"{what} has shape {list(row.shape)}; expected {spec.shape[1:]} (C, H, W)")
    return row.astype(np.float64)


# Uploads -------------------------------------------------------------------------------

Upload = Literal["multipart", "image"]


def upload_kind(content_type: str) -> Upload:
    """How an image upload carries its images: multipart form files, or one raw image."""
    if content_type.startswith("multipart/form-data"):
        return "multipart"
    if content_type.startswith("image/"):
        return "image"
    raise UnsupportedMediaType(
        f"Content-Type {content_type or 'none'!r}: expected multipart/form-data with image "
        "files, or image/png or image/jpeg"
    )


def check_uploads(images: list[tuple[str, bytes]], max_rows: int, content_type: str = "") -> None:
    """At least one image and at most `max_rows`; `content_type` names the multipart
    boundary in the message (a body cut short of it holds no complete file)."""
    if not images:
        boundary = parse_options_header(content_type)[1].get(b"boundary", b"").decode("latin-1")
        closing = f" ending with its closing boundary '--{boundary}--'" if boundary else ""
        raise BadRequest(
            "no image in the request: expected multipart/form-data file fields with a "
            f"filename (curl -F 'file=@image.png'){closing}"
        )
    if len(images) > max_rows:
        raise PayloadTooLarge(f"images has {len(images)} rows; at most {max_rows} per request")


# Encoding ------------------------------------------------------------------------------


def encode_predictions(
    model_name: str, answer: Answer, top_k: int, members: bool
) -> PredictResponse:
    """The answer as the response: one prediction per row, each with its `top_k` classes and,
    with `members`, each snapshot's label and probabilities."""
    return PredictResponse(
        model_name=model_name,
        m=len(answer.members),
        snapshots=answer.members,
        predictions=format_predictions(answer, top_k, members),
    )


def format_predictions(answer: Answer, top_k: int, members: bool) -> list[Prediction]:
    result = answer.result
    classes = answer.classes
    k = min(top_k, len(classes))
    order = np.argsort(-result.probabilities, axis=-1, kind="stable")[:, :k]
    predictions = []
    for n in range(len(result.label)):
        label = int(result.label[n])
        figures = {name: float(value[n]) for name, value in result.figures().items()}
        member_rows = None
        if members:
            member_rows = [
                MemberPrediction(
                    cycle=cycle,
                    label=int(result.member_labels[i, n]),
                    class_name=classes[int(result.member_labels[i, n])],
                    probabilities=answer.member_probs[i, n].tolist(),
                )
                for i, cycle in enumerate(answer.members)
            ]
        predictions.append(
            Prediction(
                label=label,
                class_name=classes[label],
                confidence=float(result.confidence[n]),
                top_k=[
                    ClassScore(
                        label=int(c),
                        class_name=classes[int(c)],
                        probability=float(result.probabilities[n, c]),
                    )
                    for c in order[n]
                ],
                probabilities=result.probabilities[n].tolist(),
                members=member_rows,
                **figures,
            )
        )
    return predictions
