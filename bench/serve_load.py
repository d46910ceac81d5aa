"""Serving throughput and latency: the HTTP server against raw in-process onnxruntime.

    python bench/serve_load.py [--seconds 4] [--rounds 3] [--repository DIR --model NAME]
                               [--server-args "--intra-op-threads 1"]

Serves a CIFAR-10 ResNet-20 ensemble of 5 snapshots (trained briefly on a CIFAR-10
subset from ../shared the first time, or on synthetic images where that is absent;
throughput does not depend on accuracy) and measures, on loopback:
- single-image requests at concurrency 1, 8 and 32, and batch-64 requests;
- for: the server with the fused graph and dynamic batching (binary tensors, and the
  same requests as v2 JSON); the server with one session per snapshot and no batching;
  and raw in-process onnxruntime running the same fused graph on batches of the same
  size (the limit: no HTTP, no queue);
- the fused server's mean batch, from its own histogram (snapens_batch_rows).
Requests are Open Inference Protocol v2 with binary tensors, as tritonclient sends them,
from an asyncio load generator holding one keep-alive connection per concurrent client;
each run is bounded in time and stops by itself. The three paths are measured in
interleaved rounds; prints the medians of images/s and p50/p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import snapens  # noqa: E402, F401  (before onnxruntime: its telemetry off, as in the server)

# isort: split
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from server.fusion import fuse  # noqa: E402
from server.providers import choose_providers  # noqa: E402
from server.runtime import session_options  # noqa: E402
from server.settings import RuntimeSettings  # noqa: E402
from snapens.manifest import read_manifest, read_snapshot, write_manifest  # noqa: E402

CIFAR_ZIP = ROOT.parent / "shared" / "data" / "cifar10" / "train.zip"
BENCH_REPO = ROOT / ".cache" / "bench" / "models"
BENCH_MODEL = "cifar10-resnet20"
HOST = "127.0.0.1"  # loopback only


@dataclass(frozen=True)
class Figures:
    images_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float = float("nan")  # rows per onnxruntime batch, where the server says

    def row(self) -> str:
        return (
            f"{self.images_per_s:8.1f} | {self.p50_ms:7.2f} | {self.p99_ms:7.2f} | "
            f"{self.mean_batch:5.1f}"
        )


SNAPSHOTS = 5  # the bench ensemble serves all five (its calibration alone would pick fewer)


def ensure_model(repository: Path, name: str) -> Path:
    folder = repository / name
    if (folder / "manifest.json").is_file():
        manifest = read_manifest(folder)
        if name == BENCH_MODEL and manifest.default_m != SNAPSHOTS:
            write_manifest(folder, manifest.model_copy(update={"default_m": SNAPSHOTS}))
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npz"
        if CIFAR_ZIP.is_file():
            from trainer.data import load_image_folder, stratified_split

            full = load_image_folder(CIFAR_ZIP, None, None)
            _, keep = stratified_split(full.y, 0.05, seed=0)
            np.savez(
                data, x=full.x[keep].numpy(), y=full.y[keep].numpy(), classes=np.array(full.classes)
            )
            print(f"training the bench ensemble on {len(keep)} CIFAR-10 images", flush=True)
        else:
            print(
                f"{CIFAR_ZIP} not found: training the bench ensemble on synthetic 32x32 images",
                flush=True,
            )
            rng = np.random.default_rng(0)
            np.savez(
                data,
                x=rng.integers(0, 256, (2500, 3, 32, 32), dtype=np.uint8),
                y=rng.integers(0, 10, 2500),
            )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "trainer",
                "--dataset",
                "npz",
                "--data",
                str(data),
                "--arch",
                "resnet20",
                "--epochs",
                "5",
                "--cycles",
                str(SNAPSHOTS),
                "--default-m",
                str(SNAPSHOTS),
                "--batch-size",
                "128",
                "--repository",
                str(repository),
                "--name",
                name,
                "--quiet",
            ],
            cwd=ROOT,
            check=True,
        )
    return folder


def v2_json_request(model: str, x: np.ndarray) -> bytes:
    """A complete HTTP/1.1 request: the same tensor and outputs as v2 JSON."""
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "data": x.astype(np.float32).reshape(-1).tolist(),
                }
            ],
            "outputs": [{"name": n} for n in ("label", "probabilities", "mutual_information")],
        }
    ).encode()
    return (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {HOST}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def v2_request(model: str, x: np.ndarray) -> bytes:
    """A complete HTTP/1.1 request: v2 JSON header + binary FP32 tensor, binary outputs."""
    x = x.astype(np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "probabilities", "parameters": {"binary_data": True}},
                {"name": "mutual_information", "parameters": {"binary_data": True}},
            ],
        }
    ).encode()
    body = header + x.tobytes()
    return (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {HOST}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """Read one whole HTTP/1.1 reply, by its Content-Length or in chunks (as KServe's binary
    answers and Ray Serve's come); returns its status line, and for an answer other than 200
    the start of its body."""
    status = await reader.readline()
    length, in_chunks = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == b"transfer-encoding":
            in_chunks = b"chunked" in value.lower()
    if not in_chunks:
        body = await reader.readexactly(length)
        return status if b" 200 " in status else status.rstrip() + b" " + body[:300]
    while size := int((await reader.readline()).split(b";")[0], 16):
        await reader.readexactly(size + 2)
    await reader.readline()  # the empty line after the last chunk (no trailers)
    return status


async def client(port: int, request: bytes, until: float, latencies: list[float]) -> None:
    """One closed-loop client on a keep-alive connection: sends `request` again as soon
    as it has the answer, until `until`, recording each latency."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            status = await read_reply(reader)
            if b" 200 " not in status:
                raise RuntimeError(f"server answered {status!r}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def batch_rows(port: int, model: str) -> tuple[float, float]:
    """(rows, batches) the server has run for `model`: its snapens_batch_rows histogram."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for part in found:
            if line.startswith(f'snapens_batch_rows_{part}{{model="{model}"}}'):
                found[part] = float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


def load(
    port: int,
    request: bytes | Sequence[bytes],
    concurrency: int,
    rows: int,
    seconds: float,
    model: str = "",
) -> Figures:
    """Closed-loop clients for `seconds` (with several requests, client i sends the i-th
    modulo their number); with `model`, the server's mean batch too."""
    requests = [request] if isinstance(request, bytes) else list(request)
    latencies: list[float] = []

    async def run(clients: int, seconds: float, into: list[float]) -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(
            *(client(port, requests[i % len(requests)], until, into) for i in range(clients))
        )

    asyncio.run(run(len(requests), 0.5, []))  # warm-up: one client per request
    before = batch_rows(port, model) if model else (0.0, 0.0)
    started = time.perf_counter()
    asyncio.run(run(concurrency, seconds, latencies))
    elapsed = time.perf_counter() - started
    figures = summarize(latencies, rows, elapsed)
    if not model:
        return figures
    after = batch_rows(port, model)
    batches = after[1] - before[1]
    mean = (after[0] - before[0]) / batches if batches else float("nan")
    return Figures(figures.images_per_s, figures.p50_ms, figures.p99_ms, mean)


def summarize(latencies: list[float], rows: int, elapsed: float) -> Figures:
    ms = sorted(1000 * v for v in latencies)
    return Figures(
        rows * len(ms) / elapsed, statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    )


def fused_graph(folder: Path, answer: bool = False) -> bytes:
    """The served members' fused graph as the server builds it; without `answer` it returns
    only the probabilities (the figures are then the caller's work)."""
    manifest = read_manifest(folder)
    members = [
        onnx.load_from_string(read_snapshot(folder, entry))
        for entry in manifest.last(manifest.default_m)
    ]
    io = manifest.input.name, manifest.output.name
    graph: bytes = fuse(members, *io, manifest.temperature, answer=answer).SerializeToString()
    return graph


def fused_session(folder: Path, answer: bool = False) -> ort.InferenceSession:
    """The fused graph in a session with the server's default options and providers."""
    settings = RuntimeSettings()
    providers = choose_providers(settings.providers).providers
    graph = fused_graph(folder, answer)
    return ort.InferenceSession(graph, session_options(settings), providers)


def raw(folder: Path, batch: int, seconds: float) -> Figures:
    """In-process onnxruntime on the fused graph (probabilities only, no figures): batches
    back to back. The limit: no HTTP, no queue, no uncertainty figures."""
    session = fused_session(folder)
    x = np.random.default_rng(0).uniform(0, 255, (batch, 3, 32, 32)).astype(np.float32)
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed)
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        session.run(None, feed)
        latencies.append(time.perf_counter() - t)
    return summarize(latencies, batch, time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def serve(repository: Path, *flags: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "--repository",
            str(repository),
            "--port",
            str(port),
            "--poll-interval-s",
            "60",  # hot reload on (--workers needs it), out of the measurements' way
            "--log-level",
            "warning",
            *flags,
        ],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, worker processes included
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not become ready")


SCENARIOS = [
    ("1 image, concurrency 1", 1, 1),
    ("1 image, concurrency 8", 8, 1),
    ("1 image, concurrency 32", 32, 1),
    ("64 images, concurrency 1", 1, 64),
]


PATHS = (
    "fused + dynamic batching",
    "fused + batching, v2 JSON",
    "per-member, no batching",
    "raw onnxruntime, in-process",
)


def median_figures(samples: list[Figures]) -> Figures:
    return Figures(
        *(
            statistics.median(getattr(f, name) for f in samples)
            for name in ("images_per_s", "p50_ms", "p99_ms", "mean_batch")
        )
    )


def load_arguments(doc: str | None, seconds: float) -> argparse.ArgumentParser:
    """The flags every serving benchmark takes: how long, which model, the server's flags."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=seconds, help="per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; medians are printed"
    )
    parser.add_argument("--repository", type=Path, default=BENCH_REPO)
    parser.add_argument("--model", default=BENCH_MODEL)
    parser.add_argument(
        "--server-args",
        default="",
        help='more flags for this project\'s server, e.g. --server-args="--intra-op-threads 1" '
        "(every other path keeps the server's default session options)",
    )
    return parser


def main() -> None:
    opts = load_arguments(__doc__, seconds=4.0).parse_args()
    folder = ensure_model(opts.repository, opts.model)
    model = opts.model  # whose batch histogram the fused server reports
    manifest = json.loads((folder / "manifest.json").read_text())
    print(
        f"model {opts.model}: {manifest['training']['architecture']}, "
        f"{len(manifest['snapshots'])} snapshots, {os.cpu_count()} CPU cores, "
        f"{opts.rounds} rounds of {opts.seconds:g} s per measurement",
        flush=True,
    )
    rng = np.random.default_rng(0)
    pixels = {s: rng.uniform(0, 255, (rows, 3, 32, 32)) for s, _, rows in SCENARIOS}
    requests = {s: v2_request(opts.model, x) for s, x in pixels.items()}
    json_requests = {s: v2_json_request(opts.model, x) for s, x in pixels.items()}
    fused, fused_port = serve(
        opts.repository,
        "--execution",
        "fused",
        "--max-batch-size",
        "64",
        *shlex.split(opts.server_args),
    )
    member, member_port = serve(
        opts.repository, "--execution", "per-member", "--max-batch-size", "1"
    )
    samples: dict[tuple[str, str], list[Figures]] = {}
    try:
        # Interleaved rounds: the three paths of a scenario are measured back to back, so a
        # machine whose speed drifts (a shared host) biases none of them.
        for _ in range(opts.rounds):
            for scenario, concurrency, rows in SCENARIOS:
                measured = [
                    load(fused_port, requests[scenario], concurrency, rows, opts.seconds, model),
                    load(
                        fused_port, json_requests[scenario], concurrency, rows, opts.seconds, model
                    ),
                    load(member_port, requests[scenario], concurrency, rows, opts.seconds),
                    raw(folder, concurrency * rows, opts.seconds),
                ]
                for path, figures in zip(PATHS, measured, strict=True):
                    samples.setdefault((path, scenario), []).append(figures)
                    print(f"{path:28s} {scenario:26s} {figures.row()}", flush=True)
    finally:
        for process in (fused, member):
            process.terminate()
            process.wait(timeout=30)
    results = {key: median_figures(values) for key, values in samples.items()}
    print(f"\nmedians of {opts.rounds} interleaved rounds")
    print(
        "| scenario | path | images/s | p50 ms | p99 ms | mean batch |\n|---|---|---|---|---|---|"
    )
    for scenario, _, _ in SCENARIOS:
        for path in PATHS:
            f = results[(path, scenario)]
            batch = "" if math.isnan(f.mean_batch) else f"{f.mean_batch:.1f}"
            print(
                f"| {scenario} | {path} | {f.images_per_s:.1f} | {f.p50_ms:.2f} | "
                f"{f.p99_ms:.2f} | {batch} |"
            )
    fused32 = results[(PATHS[0], "1 image, concurrency 32")].images_per_s
    json32 = results[(PATHS[1], "1 image, concurrency 32")].images_per_s
    raw32 = results[(PATHS[3], "1 image, concurrency 32")].images_per_s
    fused1 = results[(PATHS[0], "1 image, concurrency 1")]
    member1 = results[(PATHS[2], "1 image, concurrency 1")].images_per_s
    raw1 = results[(PATHS[3], "1 image, concurrency 1")]
    print(f"\nserver at concurrency 32 / raw in-process at batch 32: {fused32 / raw32:.2f}")
    print(f"v2 JSON / v2 binary at concurrency 32: {json32 / fused32:.2f}")
    print(f"p50 at concurrency 1, server - raw batch 1: {fused1.p50_ms - raw1.p50_ms:.2f} ms")
    print(
        f"fused / per-member, single images at concurrency 1: {fused1.images_per_s / member1:.2f}"
    )


if __name__ == "__main__":
    main()
