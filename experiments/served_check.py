"""The final check: the ensemble in `models/cifar10/` is served by a real server, and the
held-out split sent through the v2 endpoint (tritonclient, binary tensors) gets the
error the runtime gives in-process for the same members at the same temperature.

    python -m experiments.served_check [--preset cpu-small]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np

from experiments.cifar10 import DATA, RESULTS, ROOT, SERVED_NAME, SERVED_REPOSITORY

BATCH = 256  # the server's default largest request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(port: int) -> subprocess.Popen[bytes]:
    """`python -m server` on the served repository; returns once it is ready."""
    import urllib.error
    import urllib.request

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "--repository",
            str(SERVED_REPOSITORY),
            "--port",
            str(port),
            "--poll-interval-s",
            "0",
        ],
        cwd=ROOT,
        env={**os.environ, "SNAPENS_LOG_LEVEL": "warning"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            url = f"http://127.0.0.1:{port}/v2/models/{SERVED_NAME}/ready"
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server did not get {SERVED_NAME} ready")


def served_labels(port: int, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels for every row of x through POST /v2/models/cifar10/infer; and the m served."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    metadata: Any = client.get_model_metadata(SERVED_NAME)
    m = int(metadata["parameters"]["m"])
    labels = []
    for start in range(0, len(x), BATCH):
        batch = np.ascontiguousarray(x[start : start + BATCH])
        tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=True)
        result = client.infer(
            SERVED_NAME, [tensor], outputs=[httpclient.InferRequestedOutput("label")]
        )
        labels.append(result.as_numpy("label"))
    client.close()
    return np.concatenate(labels), m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preset", default="cpu-small", help="where to write the check")
    opts = parser.parse_args(argv)
    folder = SERVED_REPOSITORY / SERVED_NAME
    if not DATA.is_file() or not (folder / "manifest.json").is_file():
        print(f"skipped: needs {DATA} and {folder} (python -m experiments.cifar10)")
        return 0
    from experiments.cifar10 import member_logits, validation_split
    from snapens.calibration import member_probabilities
    from snapens.manifest import read_manifest

    x, y = validation_split()
    manifest = read_manifest(folder)
    # What the experiment's path (the runtime in-process) gives for the served members at
    # the served temperature.
    logits = member_logits([folder], "snapshots", x)[-manifest.default_m :]
    ensemble = member_probabilities(logits, manifest.temperature).mean(axis=0)
    port = free_port()
    server = serve(port)
    try:
        started = time.perf_counter()
        labels, m = served_labels(port, x)
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    expected = float((ensemble.argmax(axis=-1) != y).mean())
    error = float((labels != y).mean())
    check = {
        "endpoint": f"POST /v2/models/{SERVED_NAME}/infer (tritonclient.http, binary tensors)",
        "rows": len(y),
        "m": m,
        "served_error": error,
        "temperature": manifest.temperature,
        "experiment_error": expected,
        "same": bool(abs(error - expected) < 0.5 / len(y)),
        "seconds": seconds,
    }
    (RESULTS / opts.preset / "served_check.json").write_text(json.dumps(check, indent=1) + "\n")
    print(
        f"served {SERVED_NAME} (m = {m}) on {len(y):,} held-out images in {seconds:.1f} s: "
        f"error {error:.4f}; the experiment reported {expected:.4f}"
        f" → {'same' if check['same'] else 'DIFFERENT'}"
    )
    return 0 if check["same"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
