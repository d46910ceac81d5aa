"""`python -m server` as a process: it serves, stops gracefully on SIGTERM, and refuses a
missing repository or a bad setting with its exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT
from tests.server.conftest import free_port, log_records, wait_until


def test_cli_serves_and_stops_gracefully_on_sigterm(digits_repo: Path) -> None:
    port = free_port()
    env = {**os.environ, "SNAPENS_PORT": str(port), "SNAPENS_LOG_FORMAT": "json"}
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--repository", str(digits_repo)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: _ready(port), timeout=60)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    # uvicorn drains and runs the shutdown, then re-raises SIGTERM as processes conventionally do.
    assert process.returncode in (0, -signal.SIGTERM)
    assert f"listening on http://127.0.0.1:{port}" in out
    records = log_records(out)
    assert any(r["msg"] == "stopped" for r in records), out
    assert not [r for r in records if r["level"] == "error"], out


def test_a_request_still_running_when_the_graceful_shutdown_runs_out_gets_503(
    digits_repo: Path,
) -> None:
    """uvicorn cancels what still runs after --graceful-shutdown-s: the client is told to
    send again (JSON, with its request id), and the log has one warning, no traceback."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "server", "--repository", str(digits_repo)),
            *("--port", str(port), "--graceful-shutdown-s", "0.3", "--log-format", "json"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: _ready(port), timeout=60)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(  # a body that never completes keeps the request running
                b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\nX-Request-ID: unfinished-1\r\n"
                b'Content-Length: 100\r\n\r\n{"inputs"'
            )
            time.sleep(0.5)  # the request's head is read and its body awaited
            process.send_signal(signal.SIGTERM)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), answer
    assert b"x-request-id: unfinished-1" in head.lower()
    assert "send the request again" in json.loads(body)["error"]
    records = log_records(out)
    assert [r["level"] for r in records if r.get("request_id") == "unfinished-1"] == [
        "warning",
        "info",  # the access log's line: 503
    ], out
    assert not any("Exception in ASGI application" in r["msg"] for r in records), out


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_cli_rejects_bad_settings(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "server", "--repository", str(tmp_path / "none")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    bad_env = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SNAPENS_MAX_BATCH_SIZE": "zero"},
    )
    assert bad_env.returncode == 1 and "SNAPENS_MAX_BATCH_SIZE" in bad_env.stderr


def test_port_0_is_reported_as_the_port_given_and_a_taken_port_fails_to_start(
    digits_repo: Path,
) -> None:
    command = [sys.executable, "-m", "server", "--repository", str(digits_repo)]
    process = subprocess.Popen(
        [*command, "--port", "0", "--log-format", "json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = ""
        while "listening on" not in line:
            line = process.stdout.readline()
            assert line, "the server ended before its startup line"
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", line)[1])  # type: ignore[index]
        assert port != 0
        wait_until(lambda: _ready(port), timeout=60)

        taken = subprocess.run(  # the port the first server holds
            [*command, "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert taken.returncode == 3, taken.stderr
        assert "listening on" not in taken.stderr
        assert "address already in use" in taken.stderr.lower()
    finally:
        process.kill()
        process.wait()
