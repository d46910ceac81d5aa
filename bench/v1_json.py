"""The v1 API's JSON body: what parsing it costs, and a v1 request end to end.

    python bench/v1_json.py [--seconds 4] [--rounds 3]

On the serving benchmark's ensemble (CIFAR-10 ResNet-20, 5 snapshots; bench/serve_load.py
builds it the first time): one 3×32×32 image of 2-decimal pixels as v1 nested lists.
Prints the median time to parse that body with json.loads (what FastAPI uses) and with
orjson (what the server's v1 route uses), then, in interleaved rounds at concurrency 1
over loopback, the server answering it as v1 JSON and as v2 JSON and binary.
"""

from __future__ import annotations

import json
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import (
    HOST,
    Figures,
    ensure_model,
    load,
    load_arguments,
    serve,
    v2_json_request,
    v2_request,
)


def v1_request(model: str, x: np.ndarray) -> bytes:
    """A complete HTTP/1.1 request: one image as v1 JSON instances."""
    body = json.dumps({"instances": [x.tolist()]}).encode()
    return (
        f"POST /v1/models/{model}:predict HTTP/1.1\r\nHost: {HOST}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def parse_us(parse: Callable[[bytes], object], body: bytes, number: int = 300) -> float:
    """Median µs of parse(body) over 5 repeats of `number` calls."""
    repeats = timeit.repeat(lambda: parse(body), number=number, repeat=5)
    return 1e6 * statistics.median(repeats) / number


def main() -> None:
    opts = load_arguments(__doc__, seconds=4.0).parse_args()
    folder = ensure_model(opts.repository, opts.model)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32)).round(2)
    request = v1_request(opts.model, x)
    body = request.split(b"\r\n\r\n", 1)[1]
    slow, fast = parse_us(json.loads, body), parse_us(orjson.loads, body)
    print(
        f"parsing one v1 body ({len(body)} bytes): json.loads {slow:.0f} µs, "
        f"orjson {fast:.0f} µs ({slow / fast:.1f}×)"
    )

    paths = {
        "v1 JSON": request,
        "v2 JSON": v2_json_request(opts.model, x[None]),
        "v2 binary": v2_request(opts.model, x[None]),
    }
    process, port = serve(opts.repository, "--max-batch-size", "64")
    samples: dict[str, list[Figures]] = {path: [] for path in paths}
    try:
        for _ in range(opts.rounds):
            for path, sent in paths.items():
                figures = load(port, sent, 1, 1, opts.seconds, opts.model)
                samples[path].append(figures)
                print(f"{path:10s} {figures.row()}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"\none image, concurrency 1, medians of {opts.rounds} rounds ({folder.name})")
    print("| path | requests/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for path, values in samples.items():
        print(
            f"| {path} | {statistics.median(f.images_per_s for f in values):.1f} | "
            f"{statistics.median(f.p50_ms for f in values):.2f} | "
            f"{statistics.median(f.p99_ms for f in values):.2f} |"
        )


if __name__ == "__main__":
    main()
