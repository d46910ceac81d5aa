"""Export a snapshot to ONNX and verify it against PyTorch with onnxruntime."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from server.ensemble import softmax

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
TOLERANCE = 1e-4  # max |Δ softmax| allowed between onnxruntime and PyTorch


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model."""


def export_onnx(model: nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """ONNX bytes of `model` (on the CPU, in eval mode) with a dynamic batch axis.

    Uses the TorchScript exporter: it exports these networks in tens of milliseconds,
    where the torch.export-based one takes seconds per snapshot.
    """
    dummy = torch.zeros(2, *input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            model,
            (dummy,),
            buffer,  # type: ignore[arg-type]  # file-likes work; the stub names only paths
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def verify_onnx(onnx_bytes: bytes, model: nn.Module, batch: torch.Tensor) -> float:
    """Max |softmax(onnxruntime) − softmax(torch)| on `batch`.

    Raises ExportError above TOLERANCE."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Idle onnxruntime threads must not spin on the cores training is about to use.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    inputs = batch.detach().cpu().float()
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})
    with torch.no_grad():
        reference = torch.softmax(model(inputs), dim=-1).numpy()
    diff = float(np.abs(softmax(np.asarray(logits, dtype=np.float64)) - reference).max())
    if not diff <= TOLERANCE:
        raise ExportError(
            f"ONNX export differs from PyTorch: max |Δ softmax| = {diff:.2e} > {TOLERANCE}"
        )
    return diff
