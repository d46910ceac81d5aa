"""The trainer's output served: a server follows a model folder while the trainer writes it
(the trainer-to-server integration; the server's own tests build their folders without torch,
with snapens.synthetic)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.server.conftest import LiveServer, start_server, wait_until


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """Start a server on a repository with setting overrides; stopped after the test."""
    started: list[LiveServer] = []

    def run(repository: Path, wait_ready: bool = True, **overrides: Any) -> LiveServer:
        live = start_server(repository, wait_ready, **overrides)
        started.append(live)
        return live

    yield run
    for live in started:
        live.stop()


def test_hot_reload_while_the_trainer_writes_snapshots(
    serve: Callable[..., LiveServer], tmp_path: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    repo = tmp_path / "live"
    repo.mkdir()
    server = serve(repo, poll_interval_s=0.1)
    trainer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainer",
            "--repository",
            str(repo),
            "--name",
            "digits",
            "--epochs",
            "20",
            "--cycles",
            "5",
            "--batch-size",
            "32",
            "--default-m",  # serve every snapshot: the served set only grows as they come
            "5",
            "--quiet",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = lambda: httpx.get(f"{server.url}/v2/models/digits/ready", timeout=5).status_code == 200  # noqa: E731
    wait_until(ready, timeout=120)

    # Per asking thread: its requests are sequential, so each sees a set at least as large
    # as the one before (across threads, answers may land out of order).
    seen_sets: list[list[list[int]]] = [[] for _ in range(3)]
    failures: list[str] = []
    not_ready: list[int] = []
    stop = threading.Event()
    body = {"instances": digit_images[0][:4].tolist()}

    def ask(seen: list[list[int]]) -> None:
        with server.client() as http:
            while not stop.is_set():
                response = http.post("/v1/models/digits:predict", json=body)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    snapshots = response.json()["snapshots"]
                    if not seen or seen[-1] != snapshots:
                        seen.append(snapshots)

    def watch_readiness() -> None:
        with server.client() as http:
            while not stop.is_set():
                code = http.get("/v2/models/digits/ready").status_code
                if code != 200:
                    not_ready.append(code)

    workers = [threading.Thread(target=ask, args=(seen,)) for seen in seen_sets] + [
        threading.Thread(target=watch_readiness)
    ]
    for worker in workers:
        worker.start()
    try:
        assert trainer.wait(timeout=300) == 0, trainer.stderr.read() if trainer.stderr else ""
        wait_until(lambda: all(seen[-1:] == [[1, 2, 3, 4, 5]] for seen in seen_sets), timeout=30)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []  # not one request failed across the swaps
    assert not_ready == []  # readiness never dropped
    assert len({tuple(s) for seen in seen_sets for s in seen}) >= 2  # the set grew while asked
    for seen in seen_sets:
        assert all(len(a) < len(b) for a, b in itertools.pairwise(seen))
    with server.client() as http:
        meta = http.get("/v2/models/digits").json()["parameters"]
    assert meta["m"] == 5 and meta["training_state"] == "complete"
