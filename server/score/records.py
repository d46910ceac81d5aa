"""Scored rows as Arrow tables: one row per input with its id or path, the ensemble's
answer and every disagreement figure, or the reason it failed (`error`). Both engines
(local and Ray) build their output with this module."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from server.runtime import BatchAnswer
from snapens.ensemble import DISAGREEMENT_FIGURES


def _scatter(values: np.ndarray, ok: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """A full-length column: `values` at the ok positions, null elsewhere."""
    full = np.zeros((len(ok), *values.shape[1:]), dtype=values.dtype)
    full[ok] = values
    if full.ndim == 1:
        return pa.array(full, type=dtype, mask=~ok)
    flat = pa.array(full.reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, full.shape[1], mask=pa.array(~ok))


def answer_table(
    key_name: str,
    keys: pa.Array | list[object],
    answer: BatchAnswer | None,
    ok: np.ndarray,
    errors: list[str | None],
    classes: list[str],
    members: bool,
) -> pa.Table:
    """Rows for `keys`; `answer` holds the rows of the inputs where `ok` is true, in order."""
    ok = np.asarray(ok, dtype=bool)
    k = len(classes)
    if answer is None:  # every input failed
        empty = np.zeros(0)
        labels, probs, member_labels = empty.astype(np.int64), np.zeros((0, k), np.float32), None
        figures = {name: empty.astype(np.float32) for name in ("confidence", *DISAGREEMENT_FIGURES)}
        m = 1
    else:
        result = answer.result
        labels, probs = result.label, result.probabilities.astype(np.float32)
        figures = {
            name: getattr(result, name).astype(np.float32)
            for name in ("confidence", *DISAGREEMENT_FIGURES)
        }
        member_labels = result.member_labels.T  # [N, m]
        m = member_labels.shape[1]
    columns: dict[str, pa.Array] = {key_name: pa.array(keys)}
    columns["label"] = _scatter(labels.astype(np.int64), ok, pa.int64())
    class_names = np.array(classes, dtype=object)[_full(labels, ok)]
    class_names[~ok] = None
    columns["class"] = pa.array(class_names, pa.string())
    for name, values in figures.items():
        columns[name] = _scatter(values, ok, pa.float32())
    columns["probabilities"] = _scatter(probs, ok, pa.float32())
    if members:
        columns["member_labels"] = _scatter(
            member_labels if member_labels is not None else np.zeros((0, m), np.int64),
            ok,
            pa.int64(),
        )
    columns["error"] = pa.array(errors, pa.string())
    return pa.table(columns)


def _full(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    full = np.zeros(len(ok), dtype=np.int64)
    full[ok] = values
    return full
