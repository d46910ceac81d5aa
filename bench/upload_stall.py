"""Does a giant image stall the server? Health latency and memory while clients upload.

    python bench/upload_stall.py [--clients 4] [--seconds 10] [--max-image-pixels N]

Trains the digits default into a temporary repository, serves it with `python -m server`
on loopback, measures idle RSS, then has `--clients` threads upload a 12000×12000 PNG
(about 140 KB, 144 megapixels; half grey, half RGB) to /v1/models/{name}/images:predict
in a loop for `--seconds`, while one more thread asks /v2/health/live every 20 ms.
Prints the health latency percentiles, the uploads' statuses, and the server's peak RSS
against its idle RSS. With the default pixel limit each upload is refused from its header
(413); `--max-image-pixels 200000000` lets them decode (off the event loop, two at a
time) to show health does not wait on decoding either."""

from __future__ import annotations

import argparse
import collections
import io
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from fuzz import free_port, wait_ready  # noqa: E402


def giant_png(mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (12000, 12000)).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--max-image-pixels", type=int)
    args = parser.parse_args()
    images = {"L": giant_png("L"), "RGB": giant_png("RGB")}
    print("PNG sizes: " + ", ".join(f"{m} {len(b) / 1024:.0f} KiB" for m, b in images.items()))
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp) / "models"
        train = ["-m", "trainer", "--dataset", "digits", "--quiet"]
        subprocess.run([sys.executable, *train, "--repository", str(repository)], check=True)
        port = free_port()
        serve = ["-m", "server", "--port", str(port), "--log-level", "warning"]
        if args.max_image_pixels:
            serve += ["--max-image-pixels", str(args.max_image_pixels)]
        server = subprocess.Popen([sys.executable, *serve, "--repository", str(repository)])
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url)
            with httpx.Client(base_url=url) as http:
                for _ in range(20):
                    http.get("/v2/health/live")
            time.sleep(1)
            idle = rss_kib(server.pid)
            peak = idle
            stop = time.monotonic() + args.seconds
            statuses: collections.Counter[int] = collections.Counter()
            health_ms: list[float] = []

            def upload(index: int) -> None:
                body = images["L" if index % 2 == 0 else "RGB"]
                with httpx.Client(base_url=url, timeout=120) as http:
                    while time.monotonic() < stop:
                        answer = http.post(
                            "/v1/models/digits/images:predict",
                            files=[("file", ("giant.png", body, "image/png"))],
                        )
                        statuses[answer.status_code] += 1

            def health() -> None:
                with httpx.Client(base_url=url, timeout=30) as http:
                    while time.monotonic() < stop:
                        started = time.perf_counter()
                        http.get("/v2/health/live").raise_for_status()
                        health_ms.append(1000 * (time.perf_counter() - started))
                        time.sleep(0.02)

            threads = [threading.Thread(target=upload, args=(i,)) for i in range(args.clients)]
            threads.append(threading.Thread(target=health))
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss_kib(server.pid))
                time.sleep(0.05)
        finally:
            server.terminate()
            server.wait(timeout=30)
    cuts = statistics.quantiles(health_ms, n=100)
    print(f"uploads by status: {dict(statuses)}")
    print(
        f"/v2/health/live over {len(health_ms)} requests: p50 {cuts[49]:.1f} ms, "
        f"p99 {cuts[98]:.1f} ms, max {max(health_ms):.1f} ms"
    )
    print(
        f"server RSS: idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB ({peak / idle:.2f}×)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
