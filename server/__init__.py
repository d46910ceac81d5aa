"""The torch-free inference side: the model repository, the onnxruntime runtime, the HTTP
server and the batch scorer, on the contract in `snapens`.

Nothing in this package imports torch or `trainer`, so a serving image carries no torch.
"""

import snapens  # noqa: F401  (first: it turns onnxruntime's telemetry off before its import)

__version__ = "0.1.0"
