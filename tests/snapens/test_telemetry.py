"""onnxruntime's telemetry is off wherever this project loads onnxruntime (snapens/__init__.py),
unless the environment turns it on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter imports the module as the command-line entry points do, then runs a
# session, and prints what onnxruntime was told.
PROBE = """
import os, sys, importlib
importlib.import_module(sys.argv[1])
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
session.run(None, {"x": np.ones(1, np.float32)})
print(os.environ.get("ORT_DISABLE_TELEMETRY"))
"""


def probe(module: str, home: Path, **env: str) -> str:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", "HOME")
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**clean, "HOME": str(home), **env},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.mark.parametrize("module", ["server.runtime", "server.score.cli", "trainer.export"])
def test_loading_onnxruntime_through_the_project_sends_and_keeps_nothing(
    module: str, tmp_path: Path
) -> None:
    assert probe(module, tmp_path) == "1"
    # onnxruntime keeps its device identifier and event cache under ~/.cache/Microsoft
    assert list(tmp_path.rglob("*")) == []


def test_the_environment_can_turn_it_back_on(tmp_path: Path) -> None:
    assert probe("server.runtime", tmp_path, ORT_DISABLE_TELEMETRY="0") == "0"
