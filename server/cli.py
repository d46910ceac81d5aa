"""`python -m server`: serve every model folder of a repository over HTTP."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from server.settings import ServerSettings

log = logging.getLogger("snapens.server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve the snapshot ensembles of a model repository (KServe v2 and v1 JSON). "
        "Every flag is also an environment variable SNAPENS_<FLAG> (e.g. SNAPENS_PORT).",
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--repository", type=Path, help="model repository folder (default models)")
    add("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 in containers)")
    add("--port", type=int, help="(default 8000)")
    add("--m", type=int, help="snapshots to serve per model (default: the manifest's default_m)")
    add(
        "--providers",
        choices=["auto", "cuda", "tensorrt", "cpu"],
        help="onnxruntime execution providers (default auto: TensorRT, CUDA, CPU as available)",
    )
    add(
        "--execution",
        choices=["fused", "per-member"],
        help="one fused graph (default) or a session per snapshot",
    )
    add("--max-batch-size", type=int, help="rows per dynamic batch (default 64)")
    add("--max-queue-delay-ms", type=float, help="longest wait to fill a batch (default 2)")
    add("--batch-workers", type=int, help="batches in flight at once per model (default 1)")
    add("--max-request-batch", type=int, help="rows allowed in one request (default 256)")
    add("--max-body-bytes", type=int, help="request body limit (default 32 MiB)")
    add(
        "--max-image-pixels",
        type=int,
        help="uploads whose header declares more pixels get 413, undecoded (default 25,000,000)",
    )
    add("--decode-workers", type=int, help="uploaded images decoded at once (default 2)")
    add(
        "--poll-interval-s", type=float, help="manifest polling for hot reload, 0 = off (default 2)"
    )
    add("--intra-op-threads", type=int, help="onnxruntime intra-op threads (default 0 = all cores)")
    add("--inter-op-threads", type=int)
    add("--graph-optimization", choices=["disable", "basic", "extended", "all"])
    add("--log-level", choices=["debug", "info", "warning", "error"])
    add("--log-format", choices=["json", "text"])
    add(
        "--graceful-shutdown-s",
        type=float,
        help="time in-flight requests get on SIGTERM (default 10)",
    )
    return parser


def settings_from(argv: list[str] | None) -> ServerSettings:
    flags: dict[str, Any] = vars(build_parser().parse_args(argv))
    try:
        return ServerSettings(**flags)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        raise SystemExit(
            f"error: --{name.replace('_', '-')} (or SNAPENS_{name.upper()}): {first['msg']}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    settings = settings_from(argv)
    from server import logs
    from server.app import create_app

    logs.configure(settings.log_level, settings.log_format)
    if not settings.repository.is_dir():
        print(f"error: --repository {settings.repository}: no such folder", file=sys.stderr)
        return 2
    log.info(
        "listening on http://%s:%d (repository %s)",
        settings.host,
        settings.port,
        settings.repository,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the middleware logs each request
        timeout_graceful_shutdown=math.ceil(settings.graceful_shutdown_s),
    )
    return 0
