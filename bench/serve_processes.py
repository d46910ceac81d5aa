"""One server process on every core against one process per core: where the time at
concurrency 32 goes, measured.

    python bench/serve_processes.py [--seconds 4] [--rounds 3]

At concurrency 32 one server process runs a batch on both cores, then, while onnxruntime
waits, answers the round's 32 requests and parses the next 32 on one core (its event
loop): the gap between batches is the distance to raw onnxruntime. This measures, on the
serving benchmark's ensemble (CIFAR-10 ResNet-20, 5 snapshots; bench/serve_load.py builds
it the first time), with v2 binary single-image requests over loopback:
- one server, default options (onnxruntime on every core);
- two servers, each with one intra-op thread, the clients split evenly between them (as
  a load balancer in front of two replicas, or SO_REUSEPORT, would split them): while
  one process's event loop works between its batches, the other's batch runs;
- raw in-process onnxruntime at the same batch size, with the server's default options.
At concurrency 32 and 1 (a single client reaches one of the two processes, whose one
thread then runs the batch alone). Servers not being measured are paused (SIGSTOP).
Interleaved rounds; prints the medians of images/s and p50 latency.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import (
    Figures,
    client,
    ensure_model,
    load_arguments,
    raw,
    serve,
    summarize,
    v2_request,
)
from serve_peers import stop

ONE = "one process, all cores"
TWO = "two processes, one thread each"
RAW = "raw onnxruntime, in-process"
CONCURRENCY = (32, 1)


def spread(ports: list[int], request: bytes, concurrency: int, seconds: float) -> Figures:
    """Closed-loop clients for `seconds`, client i on ports[i % len(ports)]."""
    latencies: list[float] = []

    async def run(clients: int, seconds: float, into: list[float]) -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(
            *(client(ports[i % len(ports)], request, until, into) for i in range(clients))
        )

    asyncio.run(run(len(ports), 0.5, []))  # warm-up: every process answers
    started = time.perf_counter()
    asyncio.run(run(concurrency, seconds, latencies))
    return summarize(latencies, 1, time.perf_counter() - started)


def main() -> None:
    opts = load_arguments(__doc__, seconds=4.0).parse_args()
    folder = ensure_model(opts.repository, opts.model)
    request = v2_request(opts.model, np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32)))
    flags = ("--execution", "fused", "--max-batch-size", "64")
    one = [serve(opts.repository, *flags)]
    two = [serve(opts.repository, *flags, "--intra-op-threads", "1") for _ in range(2)]
    arrangements = {ONE: one, TWO: two}
    samples: dict[tuple[str, int], list[Figures]] = {}
    print(f"{os.cpu_count()} CPU cores, {opts.rounds} rounds of {opts.seconds:g} s", flush=True)
    try:
        for servers in arrangements.values():
            for process, _ in servers:
                os.kill(process.pid, signal.SIGSTOP)
        for _ in range(opts.rounds):
            for concurrency in CONCURRENCY:
                for name, servers in arrangements.items():
                    for process, _ in servers:
                        os.kill(process.pid, signal.SIGCONT)
                    try:
                        ports = [port for _, port in servers]
                        figures = spread(ports, request, concurrency, opts.seconds)
                    finally:
                        for process, _ in servers:
                            os.kill(process.pid, signal.SIGSTOP)
                    samples.setdefault((name, concurrency), []).append(figures)
                    print(f"{name:32s} c={concurrency:<3d} {figures.row()}", flush=True)
                figures = raw(folder, concurrency, opts.seconds)
                samples.setdefault((RAW, concurrency), []).append(figures)
                print(f"{RAW:32s} c={concurrency:<3d} {figures.row()}", flush=True)
    finally:
        for servers in arrangements.values():
            for process, _ in servers:
                os.kill(process.pid, signal.SIGCONT)
                stop(process)
    print(f"\nmedians of {opts.rounds} interleaved rounds")
    print("| arrangement | concurrency | images/s | p50 ms | / raw |\n|---|---|---|---|---|")
    for concurrency in CONCURRENCY:
        limit = statistics.median(f.images_per_s for f in samples[(RAW, concurrency)])
        for name in (ONE, TWO, RAW):
            values = samples[(name, concurrency)]
            rate = statistics.median(f.images_per_s for f in values)
            p50 = statistics.median(f.p50_ms for f in values)
            print(f"| {name} | {concurrency} | {rate:.1f} | {p50:.2f} | {rate / limit:.2f} |")


if __name__ == "__main__":
    main()
