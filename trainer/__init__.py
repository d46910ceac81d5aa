"""The torch side: data, networks, schedules, the training loop, snapshots and their
ONNX export, written into a model repository that `server` reads."""

import snapens  # noqa: F401  (first: it turns onnxruntime's telemetry off before its import)
