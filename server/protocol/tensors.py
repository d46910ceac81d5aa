"""Turning what a client sent into the model's input batch, with one clear error per
problem naming what was expected."""

from __future__ import annotations

import math

import numpy as np

from server.errors import BadRequest, PayloadTooLarge
from server.runtime import Float32Array
from snapens.manifest import InputSpec

# Open Inference Protocol datatypes and their numpy types.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}


def expected_shape(spec: InputSpec) -> str:
    return f"[N, {spec.channels}, {spec.height}, {spec.width}]"


JSON_SLACK = 1024  # the commas and brackets of everything in a body besides the pixels


def check_json_size(data: bytes, spec: InputSpec, max_rows: int, what: str) -> None:
    """Refuse, before it is parsed, a JSON body with far more values or arrays than
    `max_rows` inputs of `spec` hold. Parsing runs on the event loop and costs by
    structure, not by bytes: 32 MiB of nested one-value arrays took seconds to parse,
    while counting its commas and brackets takes milliseconds. The bound is twice what the
    largest valid request holds, so parsing never costs much more than that request does,
    and a request a few rows over the limit still gets the row limit's own message."""
    most = max_rows * math.prod(spec.shape[1:])
    bound = 2 * most + JSON_SLACK
    if len(data) <= bound:  # cannot hold more commas or brackets than bytes: skip counting
        return
    if data.count(b",") > bound or data.count(b"[") > bound:
        raise PayloadTooLarge(
            f"{what} holds more than {bound} values or arrays; "
            f"at most {max_rows} rows of {expected_shape(spec)} ({most} values) per request"
        )


def check_batch(x: np.ndarray, spec: InputSpec, max_rows: int, what: str) -> Float32Array:
    """x as a float32 [N, C, H, W] batch, or the reason it is not one."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(spec.shape[1:]):
        raise BadRequest(f"{what} has shape {list(x.shape)}; expected {expected_shape(spec)}")
    if len(x) == 0:
        raise BadRequest(f"{what} is an empty batch; send at least one row")
    if len(x) > max_rows:
        raise PayloadTooLarge(f"{what} has {len(x)} rows; at most {max_rows} per request")
    if x.dtype == np.float32:  # binary FP32: nothing to convert (errstate costs ~2 us)
        batch = np.ascontiguousarray(x)
    else:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            batch = np.ascontiguousarray(x, dtype=np.float32)
    low, high = float(batch.min()), float(batch.max())  # a NaN reaches both
    if not (math.isfinite(low) and math.isfinite(high)):
        raise BadRequest(f"{what} contains NaN or infinity; expected finite pixel values")
    outside = spec.pixels_outside(low, high)
    if outside is not None:
        raise BadRequest(f"{what} has {outside}")
    return batch
