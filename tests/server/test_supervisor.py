"""`python -m server --workers 2` as a process: two server processes on one port, metrics
summed over them, a dead one replaced, both stopped on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.settings import ServerSettings
from server.supervisor import Supervisor
from tests.conftest import ROOT
from tests.server.conftest import free_port, log_records, wait_until

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="each process's own socket (SO_REUSEPORT) is Linux's"
)


class Workers:
    """A `--workers 2` server on the digits repository, its JSON log in a file."""

    def __init__(self, repository: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "server", "--repository", str(repository)),
                *("--port", str(self.port), "--workers", "2", "--log-format", "json"),
            ],
            cwd=ROOT,
            env={**os.environ, "TMPDIR": str(log.parent)},  # its metrics folder
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, as a terminal's
        )

    def records(self) -> list[dict[str, Any]]:
        return log_records(self.log.read_text())

    def ready(self) -> bool:
        try:  # a new connection each time: any of the processes may answer
            return httpx.get(f"{self.url}/v2/health/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def all_loaded(self) -> bool:
        """Ready, and both processes' first loads done (the second takes connections only
        then: readiness may come before)."""
        loaded = {r["pid"] for r in self.records() if r["msg"].startswith("serving")}
        return len(loaded) == 2 and self.ready()

    def workers(self) -> dict[int, int]:
        """The pid of each worker index, the latest started."""
        started = [r for r in self.records() if r["msg"].startswith("worker ")]
        pids = {}
        for record in started:
            words = record["msg"].split()
            if words[2] == "started":
                pids[int(words[1])] = int(words[-1].rstrip(")"))
        return pids

    def stop(self, signum: int = signal.SIGTERM, group: bool = False) -> int:
        """signum to the supervisor, or with `group` to every process of the server (what
        a terminal's Ctrl-C or hangup does); the exit status."""
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        self.process.kill()
        for pid in self.workers().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def metadata_requests(url: str, count: int) -> list[int]:
    """`count` requests for the model's metadata, each on a connection of its own."""
    return [httpx.get(f"{url}/v2/models/digits", timeout=30).status_code for _ in range(count)]


def test_two_processes_share_the_port_and_report_metrics_summed_over_both(
    digits_repo: Path, tmp_path: Path
) -> None:
    server = Workers(digits_repo, tmp_path / "log")
    try:
        wait_until(server.all_loaded, timeout=90)
        assert metadata_requests(server.url, 40) == [200] * 40
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        status = server.stop()
    finally:
        server.kill()
    assert status == 0
    counted = 'snapens_requests_total{method="GET",route="/v2/models/{name}",status="200"} 40.0'
    assert counted in metrics, metrics
    records = server.records()
    answered_by = {r["pid"] for r in records if r["msg"] == "GET /v2/models/digits 200"}
    assert answered_by == set(server.workers().values())  # both, on their own sockets
    assert len(answered_by) == 2
    assert sum(r["msg"] == "stopped" for r in records) == 2
    assert not [r for r in records if r["level"] == "error"]


def test_a_process_that_dies_is_replaced_and_the_server_keeps_answering(
    digits_repo: Path, tmp_path: Path
) -> None:
    """The server stays ready while the new process loads (it takes no connection before
    its load is done); a hangup of its terminal (SIGHUP to every process) stops it as
    SIGTERM does: each process finishes and logs that it stopped."""
    server = Workers(digits_repo, tmp_path / "log")
    readiness = []
    try:
        wait_until(server.all_loaded, timeout=90)
        killed = server.workers()[1]
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: server.workers()[1] != killed, timeout=30)
        new = server.workers()[1]

        def new_one_loaded() -> bool:
            readiness.append(server.ready())
            return any(r["msg"].startswith("serving") and r["pid"] == new for r in server.records())

        wait_until(new_one_loaded, timeout=90)
        assert metadata_requests(server.url, 20) == [200] * 20
        status = server.stop(signal.SIGHUP, group=True)
    finally:
        server.kill()
    assert status == 0
    assert readiness and all(readiness)
    stopped = {r["pid"] for r in server.records() if r["msg"] == "stopped"}
    assert stopped == set(server.workers().values())
    errors = [r["msg"] for r in server.records() if r["level"] == "error"]
    assert errors == [f"worker 1 exited (status {-signal.SIGKILL}): starting another"]


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its new parent to reap it counts)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_the_processes_stop_when_the_supervisor_is_killed(
    digits_repo: Path, tmp_path: Path
) -> None:
    """SIGKILL leaves the supervisor no time to pass anything on: the kernel tells them."""
    server = Workers(digits_repo, tmp_path / "log")
    try:
        wait_until(server.all_loaded, timeout=90)
        pids = list(server.workers().values())
        server.process.kill()
        server.process.wait(timeout=30)
        wait_until(lambda: all(gone(pid) for pid in pids), timeout=30)
    finally:
        server.kill()
    assert sum(r["msg"] == "stopped" for r in server.records()) == 2  # each shut down cleanly


def test_without_a_writable_temporary_folder_the_server_says_so_and_does_not_start(
    digits_repo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where no temporary folder is writable (a read-only root without one), tempfile
    raises; the port is given back and the reason is one line."""

    def nowhere(**_: Any) -> str:
        raise FileNotFoundError("No usable temporary directory found in ['/tmp']")

    monkeypatch.setattr(tempfile, "mkdtemp", nowhere)
    port = free_port()
    settings = ServerSettings(repository=digits_repo, port=port, workers=2)
    with caplog.at_level(logging.ERROR, logger="snapens.server"):
        assert Supervisor(settings).run() == 3
    assert [r.getMessage() for r in caplog.records] == [
        "--workers needs a writable temporary folder (TMPDIR) for the processes' metrics: "
        "No usable temporary directory found in ['/tmp']"
    ]
    with socket.create_server(("127.0.0.1", port)):  # the port is free again
        pass


def test_a_model_removed_from_the_repository_reads_zero_snapshots_in_the_summed_metrics(
    digits_repo: Path, tmp_path: Path
) -> None:
    """prometheus_client cannot remove a series in multiprocess mode (it warns, on stderr
    outside the JSON log); the unloaded model's series says 0."""
    server = Workers(digits_repo, tmp_path / "log")
    series = 'snapens_loaded_snapshots{model="digits"}'
    try:
        wait_until(server.all_loaded, timeout=90)
        before = httpx.get(f"{server.url}/metrics", timeout=30).text
        shutil.rmtree(digits_repo / "digits")
        wait_until(lambda: metadata_requests(server.url, 8) == [404] * 8, timeout=30)
        after = httpx.get(f"{server.url}/metrics", timeout=30).text
        status = server.stop()
    finally:
        server.kill()
    assert status == 0
    assert f"{series} 5.0" in before and f"{series} 0.0" in after
    assert "Warning" not in server.log.read_text()
