"""Fuzz the whole HTTP API with schemathesis, every check on, against a real server.

    python bench/fuzz.py [--max-examples 600] [--seed N] [--repository DIR]

Trains the digits default into a temporary repository (unless --repository names one),
serves it with `python -m server` on a free loopback port, and runs `st run --checks all`
on its OpenAPI document with the suite's settings (tests/server/schemathesis.toml).
At 600 examples per operation this is about 13,000 requests; the suite runs a short one
(tests/server/test_fuzz.py). Prints schemathesis' summary and exits with its status.
Also counts lines the server logged as unexpected errors (a 5xx is never expected)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "server" / "schemathesis.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def schemathesis_command(url: str, max_examples: int, seed: int) -> list[str]:
    """The `st run` command line the suite and this script share."""
    st = Path(sys.executable).with_name("st")
    return [
        str(st),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--no-color",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repository", type=Path, help="serve this repository (default: train)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repository = args.repository
        if repository is None:
            repository = Path(tmp) / "models"
            train = ["-m", "trainer", "--dataset", "digits", "--quiet"]
            subprocess.run(
                [sys.executable, *train, "--repository", str(repository)],
                cwd=ROOT,
                check=True,
            )
        port = free_port()
        log = Path(tmp) / "server.log"
        env = {**os.environ, "SNAPENS_LOG_FORMAT": "json", "SNAPENS_POLL_INTERVAL_S": "0"}
        with log.open("w") as sink:
            serve = ["-m", "server", "--port", str(port)]
            server = subprocess.Popen(
                [sys.executable, *serve, "--repository", str(repository)],
                cwd=ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url)
            started = time.perf_counter()
            code = subprocess.run(
                schemathesis_command(url, args.max_examples, args.seed), check=False
            ).returncode
            seconds = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
        unexpected = log.read_text().count("unexpected error")
    print(
        f"schemathesis exit {code} in {seconds:.0f} s; server-side unexpected errors: {unexpected}"
    )
    return code or int(unexpected > 0)


if __name__ == "__main__":
    sys.exit(main())
