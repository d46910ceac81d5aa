"""Schemathesis against the real app on loopback, every check on (`--checks all`): no 5xx,
every answer's status documented and its body matching the documented schema, every
`$ref` resolving. A short run; `make fuzz` (bench/fuzz.py) runs the long one."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.server.conftest import LiveServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from fuzz import schemathesis_command


def test_the_openapi_document_resolves_and_documents_every_error() -> None:
    from server.app import create_app
    from server.settings import ServerSettings

    document = create_app(ServerSettings()).openapi()
    text = str(document)
    refs = set(re.findall(r"'\$ref': '#/components/schemas/([^']+)'", text))
    assert refs and refs <= set(document["components"]["schemas"])
    assert "$defs" not in text
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"401", "405"} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if status.startswith("4") and status not in ("422",):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema in (
                        {"$ref": "#/components/schemas/ErrorResponse"},
                        {"$ref": "#/components/schemas/ReadyResponse"},
                    ), (method, path, status)


def test_schemathesis_finds_nothing(serve: Callable[..., LiveServer]) -> None:
    server = serve(poll_interval_s=0)
    run = subprocess.run(
        schemathesis_command(server.url, max_examples=25, seed=7),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert generated is not None, summary
    assert int(generated.group(1)) > 300 and generated.group(1) == generated.group(2), summary
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
