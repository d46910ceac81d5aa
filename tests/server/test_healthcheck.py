"""The container's health check (server.healthcheck) asks readiness where the server
listens: the port and host from the server's own flags, environment and .env. (That it
answers 1 then 0 against a real server started by the image's entry command is
tests/deploy/test_container.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.healthcheck import ready_url, server_flags


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SNAPENS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env but the test's own


@pytest.mark.parametrize(
    ("cmdline", "flags"),
    [
        (b"python\0-m\0server\0--port\0009001\0", ["--port", "9001"]),
        (b"/usr/local/bin/python\0-m\0server\0", []),
        (b"python\0-m\0trainer\0--port\0009001\0", []),  # another command: none of its flags
        (b"", []),
    ],
)
def test_the_flags_come_from_a_python_m_server_command_line(
    cmdline: bytes, flags: list[str]
) -> None:
    assert server_flags(cmdline) == flags


def test_the_port_and_host_are_read_as_the_server_reads_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert ready_url([]) == "http://127.0.0.1:8000/v2/health/ready"
    (tmp_path / ".env").write_text("SNAPENS_PORT=7000\n")
    assert ready_url([]) == "http://127.0.0.1:7000/v2/health/ready"
    monkeypatch.setenv("SNAPENS_PORT", "7001")
    monkeypatch.setenv("SNAPENS_HOST", "0.0.0.0")
    assert ready_url([]) == "http://127.0.0.1:7001/v2/health/ready"
    # The image sets SNAPENS_PORT=8000; `docker run IMAGE --port 9000` overrides it.
    assert ready_url(["--port", "9000"]) == "http://127.0.0.1:9000/v2/health/ready"
    assert ready_url(["--host", "::", "--port", "9000"]) == "http://[::1]:9000/v2/health/ready"
    assert ready_url(["--host", "10.1.2.3"]) == "http://10.1.2.3:7001/v2/health/ready"
