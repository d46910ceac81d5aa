"""LitServe serving the fused ensemble graph, for bench/serve_peers.py.

    .cache/peers/litserve/venv/bin/python bench/peers/litserve_app.py GRAPH PORT

POST /predict {"input": [3*32*32 pixel values]} answers {"probabilities": [...],
"label": k, <the six figures>}. One HTTP server process and one inference worker, joined
by ZeroMQ (`fast_queue`, which LitServe advises beyond 100 requests/s), with LitServe's
batching: up to MAX_BATCH_SIZE requests, waiting at most BATCH_TIMEOUT_S for a batch to
fill; each batch is one session.run of the fused graph (and snapens.ensemble.combine
where the graph has no figures: bench/peers/common.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_S = 0.002  # this project's server waits at most 2 ms to fill a batch


class EnsembleAPI(ls.LitAPI):  # type: ignore[misc]  # litserve is not typed here
    def __init__(self, graph: Path) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
        self.graph = graph

    def setup(self, device: str) -> None:
        self.ensemble = common.Ensemble(self.graph)

    # No annotations on the request or the response: LitServe takes them for the body's
    # types (a FastAPI model); without, it parses the JSON itself, as its examples do.
    def decode_request(self, request, **kwargs):  # type: ignore[no-untyped-def]
        return self.ensemble.pixels(request["input"])

    def batch(self, inputs: list[common.Float32Array]) -> common.Float32Array:
        return np.stack(inputs)

    def predict(self, x: common.Float32Array, **kwargs: Any) -> list[dict[str, Any]]:
        return common.rows(self.ensemble.answer(x))

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output, **kwargs):  # type: ignore[no-untyped-def]
        return output


def main() -> None:
    graph, port = Path(sys.argv[1]), int(sys.argv[2])
    server = ls.LitServer(
        EnsembleAPI(graph),
        accelerator="cpu",
        devices=1,
        workers_per_device=1,
        timeout=60,
        fast_queue=True,  # ZeroMQ between the HTTP server and the worker: its docs' advice
    )
    server.run(host=common.HOST, port=port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
