"""Ray Serve serving the fused ensemble graph, for bench/serve_peers.py.

    .cache/peers/ray/venv/bin/python bench/peers/rayserve_app.py GRAPH PORT

POST /predict {"input": [3*32*32 pixel values]} answers {"probabilities": [...],
"label": k, <the six figures>}. A local Ray instance on loopback, its HTTP proxy on
127.0.0.1:PORT, and one replica of one deployment whose handler is batched with
`@serve.batch` (up to MAX_BATCH_SIZE requests, waiting at most BATCH_WAIT_S): each batch
is one session.run of the fused graph (and snapens.ensemble.combine where the graph has
no figures: bench/peers/common.py). The replica
takes up to MAX_ONGOING_REQUESTS requests at once (Ray's default, 5, would cap every
batch at 5).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import Request

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

MAX_BATCH_SIZE = 32
BATCH_WAIT_S = 0.002  # this project's server waits at most 2 ms to fill a batch
MAX_ONGOING_REQUESTS = 64


class Ensemble:
    def __init__(self, graph: str) -> None:
        self.ensemble = common.Ensemble(Path(graph))

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def answer(self, images: list[common.Float32Array]) -> list[dict[str, Any]]:
        return common.rows(self.ensemble.answer(np.stack(images)))

    async def __call__(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        row: dict[str, Any] = await self.answer(self.ensemble.pixels(body["input"]))
        return row


def main() -> None:
    graph, port = Path(sys.argv[1]), int(sys.argv[2])
    ray.init(
        address="local",
        _node_ip_address=common.HOST,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent)}},
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": common.HOST, "port": port})
        deployment = serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS)(Ensemble)
        serve.run(deployment.bind(str(graph)), route_prefix="/predict", blocking=False)
        while not stop.wait(1.0):
            pass
    finally:
        ray.shutdown()  # Serve's controller, proxy and replica with it


if __name__ == "__main__":
    main()
