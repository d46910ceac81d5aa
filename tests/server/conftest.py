"""A real uvicorn server on a free loopback port, serving a copy of a digits repository
written without torch (the `synthetic_digits` folder of tests/conftest.py)."""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from server.app import create_app
from server.cli import uvicorn_options
from server.settings import ServerSettings

# The disagreement figures every prediction carries (docs/design.md), spelled out here rather
# than imported, so the tests check the contract and not the implementation's own list.
FIGURES = (
    "vote_disagreement",
    "pairwise_disagreement",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "member_std",
)


def png(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a digit image in 0..16."""
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255 / 16).round().astype(np.uint8), mode="L").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def log_records(output: str) -> list[dict[str, Any]]:
    """The JSON log lines of a server's output, parsed (other lines skipped)."""
    records = []
    for line in output.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    settings: ServerSettings
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def address(self) -> str:
        """host:port, as tritonclient takes it."""
        return self.url.removeprefix("http://")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(repository: Path, wait_ready: bool = True, **overrides: Any) -> LiveServer:
    values: dict[str, Any] = {
        "repository": repository,
        "port": free_port(),
        "log_format": "text",
        "poll_interval_s": 0.2,
        "graceful_shutdown_s": 5,
        **overrides,
    }
    settings = ServerSettings(**values)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/live", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    else:
        raise RuntimeError("the server did not start")
    live = LiveServer(url, settings, server, thread)
    if wait_ready and any(repository.iterdir()):
        wait_until(
            lambda: httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200, timeout=60
        )
    return live


def wait_until(condition: Callable[[], bool], timeout: float = 30, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def copy_model(folder: Path, repository: Path, name: str = "digits") -> Path:
    """Copy a model folder into `repository` as `name`; returns the repository."""
    shutil.copytree(folder, repository / name, ignore=shutil.ignore_patterns("checkpoint"))
    return repository


@pytest.fixture
def digits_repo(synthetic_digits: Path, tmp_path: Path) -> Path:
    """A fresh repository holding a copy of the session's digits model folder."""
    return copy_model(synthetic_digits, tmp_path / "models")


@pytest.fixture
def serve(digits_repo: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start a server on the digits repository (or another) with setting overrides."""
    started: list[LiveServer] = []

    def run(
        repository: Path | None = None, wait_ready: bool = True, **overrides: Any
    ) -> LiveServer:
        live = start_server(repository or digits_repo, wait_ready, **overrides)
        started.append(live)
        return live

    yield run
    for live in started:
        live.stop()
    # A server freezes the heap when it starts (server.heap), here the test process's:
    # give the collector back what this test left.
    gc.unfreeze()


@pytest.fixture
def server(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve()


class ServedSetWatch:
    """Clients asking a live server while its model's snapshot set changes: three asking
    threads, each recording the sets that answered it in order (its requests are
    sequential, so each should see sets only grow; across threads answers may land out of
    order), the requests that failed, and any readiness answer other than 200."""

    def __init__(self, server: LiveServer, body: dict[str, Any], askers: int = 3) -> None:
        self.server, self.body = server, body
        self.seen_sets: list[list[list[int]]] = [[] for _ in range(askers)]
        self.failures: list[str] = []
        self.not_ready: list[int] = []
        self._stop = threading.Event()
        self.workers = [threading.Thread(target=self._ask, args=(s,)) for s in self.seen_sets]
        self.workers.append(threading.Thread(target=self._watch_readiness))

    def _ask(self, seen: list[list[int]]) -> None:
        with self.server.client() as http:
            while not self._stop.is_set():
                response = http.post("/v1/models/digits:predict", json=self.body)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text}")
                else:
                    snapshots = response.json()["snapshots"]
                    if not seen or seen[-1] != snapshots:
                        seen.append(snapshots)

    def _watch_readiness(self) -> None:
        with self.server.client() as http:
            while not self._stop.is_set():
                code = http.get("/v2/models/digits/ready").status_code
                if code != 200:
                    self.not_ready.append(code)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self.workers:
            if worker.is_alive():
                worker.join()

    def every_asker_saw(self, snapshots: list[int]) -> bool:
        return all(seen[-1:] == [snapshots] for seen in self.seen_sets)

    def assert_swaps_were_seamless(self) -> None:
        assert self.failures == []  # not one request failed across the swaps
        assert self.not_ready == []  # readiness never dropped
        sets = {tuple(s) for seen in self.seen_sets for s in seen}
        assert len(sets) >= 2  # the set grew while asked
        for seen in self.seen_sets:
            assert all(len(a) < len(b) for a, b in itertools.pairwise(seen))
