"""The trainer's output served: a server follows a model folder while the trainer writes it
(the trainer-to-server integration; the server's own tests build their folders without torch,
with snapens.synthetic)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.server.conftest import LiveServer, ServedSetWatch, start_server, wait_until


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

    watch = ServedSetWatch(server, {"instances": digit_images[0][:4].tolist()})
    watch.start()
    try:
        assert trainer.wait(timeout=300) == 0, trainer.stderr.read() if trainer.stderr else ""
        wait_until(lambda: watch.every_asker_saw([1, 2, 3, 4, 5]), timeout=30)
    finally:
        watch.stop()
    watch.assert_swaps_were_seamless()
    with server.client() as http:
        meta = http.get("/v2/models/digits").json()["parameters"]
    assert meta["m"] == 5 and meta["training_state"] == "complete"
