"""One server process on every core against `--workers 2`: where the time at concurrency
32 goes, measured.

    python bench/serve_processes.py [--seconds 4] [--rounds 3] [--workers 2]

At concurrency 32 one server process runs a batch on both cores, then, while onnxruntime
waits, answers the round's 32 requests and parses the next 32 on one core (its event
loop): the gap between batches is the distance to raw onnxruntime. This measures, on the
serving benchmark's ensemble (CIFAR-10 ResNet-20, 5 snapshots; bench/serve_load.py builds
it the first time), with v2 binary single-image requests over loopback:
- the server with one process (`--workers 1`, the default: onnxruntime on every core);
- the server with `--workers N` processes on the same port (each with its share of the
  cores, and every core for a batch alone on the machine): while one process's event
  loop works between its batches, another's batch runs; the kernel spreads the clients'
  connections between the processes;
- raw in-process onnxruntime at the same batch size, with the server's default options.
At concurrency 32, 8 and 1. Servers not being measured are paused (SIGSTOP to every
process of the server). Interleaved rounds; prints the medians of images/s and p50
latency, then what each server holds in memory after the rounds (on Linux), summed over
its processes: resident set size, and proportional set size, which splits each shared
page between the processes that map it (the other server's too: both are up).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
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
from serve_peers import session_processes, stop

ONE = "one process (--workers 1)"
RAW = "raw onnxruntime, in-process"
CONCURRENCY = (32, 8, 1)


def spread(port: int, request: bytes, concurrency: int, seconds: float) -> Figures:
    """Closed-loop clients for `seconds`, each on a connection of its own."""
    latencies: list[float] = []

    async def run(clients: int, seconds: float, into: list[float]) -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(client(port, request, until, into) for _ in range(clients)))

    asyncio.run(run(concurrency, 0.5, []))  # warm-up
    started = time.perf_counter()
    asyncio.run(run(concurrency, seconds, latencies))
    return summarize(latencies, 1, time.perf_counter() - started)


def pause(process: subprocess.Popen[bytes], signum: int) -> None:
    """signum to every process of a server (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def memory_mb(leader: int) -> tuple[float, float, int] | None:
    """(RSS, PSS) in MB summed over the processes of the server `leader` started, and
    their number; None off Linux (no /proc/PID/smaps_rollup)."""
    rss = pss = 0.0
    pids = session_processes(leader)
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            return None
        fields = {k: v.split() for k, _, v in (line.partition(":") for line in rollup.splitlines())}
        rss += int(fields["Rss"][0]) / 1024
        pss += int(fields["Pss"][0]) / 1024
    return rss, pss, len(pids)


def main() -> None:
    parser = load_arguments(__doc__, seconds=4.0)
    parser.add_argument("--workers", type=int, default=2, help="processes of the other server")
    opts = parser.parse_args()
    folder = ensure_model(opts.repository, opts.model)
    request = v2_request(opts.model, np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32)))
    flags = ("--execution", "fused", "--max-batch-size", "64")
    many = f"--workers {opts.workers}"
    servers = {
        ONE: serve(opts.repository, *flags),
        many: serve(opts.repository, *flags, "--workers", str(opts.workers)),
    }
    samples: dict[tuple[str, int], list[Figures]] = {}
    print(f"{os.cpu_count()} CPU cores, {opts.rounds} rounds of {opts.seconds:g} s", flush=True)
    try:
        for process, _ in servers.values():
            pause(process, signal.SIGSTOP)
        for _ in range(opts.rounds):
            for concurrency in CONCURRENCY:
                for name, (process, port) in servers.items():
                    pause(process, signal.SIGCONT)
                    try:
                        figures = spread(port, request, concurrency, opts.seconds)
                    finally:
                        pause(process, signal.SIGSTOP)
                    samples.setdefault((name, concurrency), []).append(figures)
                    print(f"{name:32s} c={concurrency:<3d} {figures.row()}", flush=True)
                figures = raw(folder, concurrency, opts.seconds)
                samples.setdefault((RAW, concurrency), []).append(figures)
                print(f"{RAW:32s} c={concurrency:<3d} {figures.row()}", flush=True)
        memory = {name: memory_mb(process.pid) for name, (process, _) in servers.items()}
    finally:
        for process, _ in servers.values():
            pause(process, signal.SIGCONT)
            stop(process)
    print(f"\nmedians of {opts.rounds} interleaved rounds")
    print("| server | concurrency | images/s | p50 ms | / raw | p50 − raw ms |")
    print("|---|---|---|---|---|---|")
    for concurrency in CONCURRENCY:
        limit = statistics.median(f.images_per_s for f in samples[(RAW, concurrency)])
        raw_p50 = statistics.median(f.p50_ms for f in samples[(RAW, concurrency)])
        for name in (ONE, many, RAW):
            values = samples[(name, concurrency)]
            rate = statistics.median(f.images_per_s for f in values)
            p50 = statistics.median(f.p50_ms for f in values)
            print(
                f"| {name} | {concurrency} | {rate:.1f} | {p50:.2f} | {rate / limit:.2f} "
                f"| {p50 - raw_p50:+.2f} |"
            )
    print("\nmemory after the rounds, summed over each server's processes")
    for name, held in memory.items():
        if held is None:
            print(f"- {name}: not measured (no /proc/PID/smaps_rollup here)")
        else:
            rss, pss, count = held
            processes = f"{count} process{'es' if count > 1 else ''}"
            print(f"- {name}: RSS {rss:.0f} MB, PSS {pss:.0f} MB ({processes})")


if __name__ == "__main__":
    main()
