"""The friendly JSON API's codec (server.protocol.v1_codec), without a server: instances
(pixel lists and base64 images) to a batch in order, uploads checked, answers formatted as
predictions, and each malformed request's status and message, decoded inside
`client_input` as the route does."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from server.errors import ServingError, client_input
from server.model import Answer
from server.protocol.v1_codec import (
    assemble,
    check_uploads,
    decode_instances,
    encode_predictions,
    upload_kind,
)
from snapens.ensemble import DISAGREEMENT_FIGURES, combine, softmax
from snapens.images import DEFAULT_MAX_IMAGE_PIXELS, to_model_input
from snapens.manifest import InputSpec

SPEC = InputSpec(name="input", shape=[-1, 1, 8, 8], pixel_range=(0, 16), color_mode="L")
CLASSES = ["cat", "dog", "bird"]
MAX_ROWS = 4


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), value).save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def batch(instances: list[Any]) -> np.ndarray:
    """What the route does, with the images decoded here as the image decoder would."""
    with client_input("instances"):
        decoded = decode_instances(instances, SPEC, MAX_ROWS)
    images = None
    if decoded.images:
        images = np.stack(
            [
                to_model_input(data, SPEC, DEFAULT_MAX_IMAGE_PIXELS)
                for _, data in decoded.labelled_images()
            ]
        )
    with client_input("instances"):
        return assemble(decoded, images, SPEC, MAX_ROWS)


def answer(rows: int = 2) -> Answer:
    logits = np.random.default_rng(1).normal(0, 2, size=(3, rows, len(CLASSES)))
    member_probs = softmax(logits).astype(np.float32)
    return Answer(combine(member_probs), CLASSES, [2, 3, 4], member_probs)


def test_pixel_lists_and_images_come_back_as_one_batch_in_their_order() -> None:
    grey = np.full((8, 8), 5.0)
    channel_first = np.arange(64, dtype=float).reshape(1, 8, 8) % 17
    instances = [grey.tolist(), b64(png(255)), channel_first.tolist(), b64(png(0))]
    decoded = decode_instances(instances, SPEC, MAX_ROWS)
    assert sorted(decoded.rows) == [0, 2] and sorted(decoded.images) == [1, 3]
    assert [label for label, _ in decoded.labelled_images()] == ["instance 1", "instance 3"]
    x = batch(instances)
    assert x.shape == (4, 1, 8, 8) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, 0], grey)  # [H, W] for one channel
    np.testing.assert_array_equal(x[2], channel_first)
    np.testing.assert_allclose(x[1], 16.0)  # white, in the model's pixel range
    np.testing.assert_allclose(x[3], 0.0)


def test_a_batch_of_pixel_lists_alone_needs_no_decoding() -> None:
    decoded = decode_instances([[[1.0] * 8] * 8], SPEC, MAX_ROWS)
    assert decoded.images == {} and decoded.labelled_images() == []
    np.testing.assert_array_equal(assemble(decoded, None, SPEC, MAX_ROWS), np.ones((1, 1, 8, 8)))


GOOD = [[0] * 8] * 8

# (case, instances, status, part of the message)
ERRORS: list[tuple[str, list[Any], int, str]] = [
    ("too many", [GOOD] * 5, 413, "instances has 5 rows; at most 4 per request"),
    ("b64 not a string", [{"b64": 1}], 400, 'instance 0: expected {"b64": "<base64 image>"}'),
    ("b64 and more", [GOOD, {"b64": "", "x": 1}], 400, 'instance 1: expected {"b64"'),
    ("other object", [{"pixels": GOOD}], 400, "instance 0: expected"),
    ("bad base64", [{"b64": "not base64!"}], 400, "instance 0: b64 is not valid base64"),
    ("strings", [[["0"] * 8] * 8], 400, "instance 0: expected numbers in a nested list"),
    ("booleans", [[[True] * 8] * 8], 400, "instance 0: expected numbers"),
    ("int beyond int64", [[[10**400] * 8] * 8], 400, "instance 0: expected numbers"),
    ("shape", [GOOD, [[0] * 8] * 7], 400, "instance 1 has shape [1, 7, 8]; expected [1, 8, 8]"),
    ("ragged", [[[0] * 8, [0] * 7]], 400, "instance 0: expected numbers in a nested list shaped"),
    ("NaN", [[[float("nan")] * 8] * 8], 400, "instances contains NaN or infinity"),
    ("infinity", [[[float("inf")] * 8] * 8], 400, "NaN or infinity"),
]


@pytest.mark.parametrize(
    ("instances", "status", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_a_malformed_instance_is_a_client_error_naming_it(
    instances: list[Any], status: int, message: str
) -> None:
    with pytest.raises(ServingError) as raised:
        batch(instances)
    assert raised.value.status == status
    assert message in raised.value.message


def test_uploads_are_multipart_files_or_one_raw_image() -> None:
    assert upload_kind("multipart/form-data; boundary=x") == "multipart"
    assert upload_kind("image/png") == "image" and upload_kind("image/jpeg") == "image"
    for content_type, named in (("text/plain", "'text/plain'"), ("", "'none'")):
        with pytest.raises(ServingError) as raised:
            upload_kind(content_type)
        assert raised.value.status == 415
        assert raised.value.message.startswith(f"Content-Type {named}: expected multipart")
    check_uploads([("image 'a.png'", b"")] * 2, 2)
    with pytest.raises(ServingError) as raised:
        check_uploads([], 2)
    assert raised.value.status == 400 and "no image in the request" in raised.value.message
    with pytest.raises(ServingError) as raised:
        check_uploads([("the body", b"")] * 3, 2)
    assert raised.value.status == 413
    assert raised.value.message == "images has 3 rows; at most 2 per request"


def test_an_answer_becomes_one_prediction_per_row() -> None:
    given = answer()
    response = encode_predictions("pets", given, top_k=2, members=False)
    assert response.model_name == "pets" and response.m == 3 and response.snapshots == [2, 3, 4]
    result = given.result
    for n, prediction in enumerate(response.predictions):
        label = int(result.label[n])
        assert prediction.label == label and prediction.class_name == CLASSES[label]
        assert prediction.confidence == pytest.approx(float(result.confidence[n]))
        order = np.argsort(-result.probabilities[n], kind="stable")[:2]
        assert [c.label for c in prediction.top_k] == order.tolist()
        assert [c.class_name for c in prediction.top_k] == [CLASSES[i] for i in order]
        np.testing.assert_allclose(prediction.probabilities, result.probabilities[n], atol=1e-7)
        for name in DISAGREEMENT_FIGURES:
            assert getattr(prediction, name) == pytest.approx(float(getattr(result, name)[n]))
        assert prediction.members is None
    document = response.model_dump(by_alias=True, exclude_none=True)
    assert document["predictions"][0]["class"] == CLASSES[int(result.label[0])]
    assert "members" not in document["predictions"][0]


def test_members_list_each_snapshots_vote_and_top_k_stops_at_the_classes() -> None:
    given = answer(rows=1)
    (prediction,) = encode_predictions("pets", given, top_k=10, members=True).predictions
    assert len(prediction.top_k) == len(CLASSES)
    assert prediction.members is not None
    assert [member.cycle for member in prediction.members] == [2, 3, 4]
    for i, member in enumerate(prediction.members):
        label = int(given.result.member_labels[i, 0])
        assert member.label == label and member.class_name == CLASSES[label]
        np.testing.assert_allclose(member.probabilities, given.member_probs[i, 0], atol=1e-7)
