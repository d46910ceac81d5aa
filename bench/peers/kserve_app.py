"""KServe's ModelServer serving the fused ensemble graph, for bench/serve_peers.py.

    .cache/peers/kserve/venv/bin/python bench/peers/kserve_app.py GRAPH PORT

A `kserve.Model` named `ensemble` on the Open Inference Protocol (v2) REST endpoint,
POST /v2/models/ensemble/infer, taking the same requests as this project's server: the
input tensor as binary data after the JSON header (or as v2 JSON), and answering with the
outputs the request asks for (of probabilities, label and the six figures; KServe picks
them), binary where asked so. The Python ModelServer has no adaptive
batcher (KServe's batcher is a sidecar of an InferenceService on Kubernetes), so each
request is one session.run: `predict` is synchronous, as in KServe's own model servers
(sklearnserver, xgbserver). One uvicorn worker, gRPC off, per-request latency log off.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import kserve
from kserve import model_server
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.protocol.rest.server import RESTServer
from kserve.utils.utils import from_np_dtype, generate_uuid

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


class EnsembleModel(kserve.Model):  # type: ignore[misc]  # kserve is not typed here
    def __init__(self, name: str, graph: Path) -> None:
        super().__init__(name)
        self.graph = graph
        self.load()

    def load(self) -> bool:
        self.ensemble = common.Ensemble(self.graph)
        self.ready = True
        return True

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        outputs = [
            InferOutput(name, list(array.shape), from_np_dtype(array.dtype), array)
            for name, array in common.outputs(self.ensemble.answer(x)).items()
        ]
        return InferResponse(  # as kserve.utils.utils.get_predict_response builds it
            payload.id or generate_uuid(),
            self.name,
            outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


class LoopbackRESTServer(RESTServer):  # type: ignore[misc]
    """KServe's REST server binds 0.0.0.0 with no option to change it: loopback here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = common.HOST


def main() -> None:
    graph, port = Path(sys.argv[1]), int(sys.argv[2])
    model_server.RESTServer = LoopbackRESTServer
    server = kserve.ModelServer(
        http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False
    )
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([EnsembleModel(common.MODEL_NAME, graph)])


if __name__ == "__main__":
    main()
