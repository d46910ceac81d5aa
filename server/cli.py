"""`python -m server`: serve every model folder of a repository over HTTP."""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from server.settings import (
    RuntimeSettings,
    ServerSettings,
    SettingsError,
    add_flags,
    env_only_help,
    flag_fields,
    settings_from_flags,
)
from snapens.flags import HelpFormatter

if TYPE_CHECKING:
    from server.board import ProcessBoard

log = logging.getLogger("snapens.server")


def build_parser() -> argparse.ArgumentParser:
    """The flags of every ServerSettings field (but the secret API key), generated."""
    parser = argparse.ArgumentParser(
        prog="python -m server",
        usage="%(prog)s [--flag VALUE ...]",
        description="Serve the snapshot ensembles of a model repository (KServe v2 and v1 JSON). "
        "Every flag is also an environment variable SNAPENS_<FLAG> (--max-batch-size: "
        "SNAPENS_MAX_BATCH_SIZE), read from a .env file too; flags override both.",
        epilog=env_only_help(ServerSettings),
        formatter_class=HelpFormatter,
    )
    runtime = RuntimeSettings.model_fields
    add_flags(
        parser,
        ServerSettings,
        "serving",
        [name for name in flag_fields(ServerSettings) if name not in runtime],
    )
    add_flags(
        parser,
        RuntimeSettings,
        "onnxruntime",
        description="How snapshots run; python -m server.score takes these flags too.",
    )
    return parser


def settings_from(argv: list[str] | None) -> ServerSettings:
    """The settings from argv, the environment and .env; a bad value exits with one line
    naming its flag and environment variable."""
    try:
        return settings_from_flags(ServerSettings, build_parser().parse_args(argv))
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    settings = settings_from(argv)
    from server import logs

    logs.configure(settings.log_level, settings.log_format)
    if not settings.repository.is_dir():
        print(f"error: --repository {settings.repository}: no such folder", file=sys.stderr)
        return 2
    if settings.workers > 1:
        from server.supervisor import Supervisor

        return Supervisor(settings).run()
    # uvicorn's own error and exit where the port is taken; the app is made where it serves.
    sock = uvicorn.Config("server.app:create_app", **uvicorn_options(settings)).bind_socket()
    listening(settings, sock)
    return serve(settings, sock)


def listening(settings: ServerSettings, sock: socket.socket) -> None:
    """The startup line, with the port the system gave (for --port 0)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    processes = f", {settings.workers} processes" if settings.workers > 1 else ""
    log.info(
        "listening on http://%s:%d (repository %s%s)", shown, port, settings.repository, processes
    )


def serve(
    settings: ServerSettings,
    sock: socket.socket,
    board: ProcessBoard | None = None,
    answer_while_loading: bool = True,
) -> int:
    """Serve on sock in this process until SIGTERM or SIGINT; the exit status."""
    from server.app import create_app

    app = create_app(settings, board, answer_while_loading)
    config = uvicorn.Config(app, **uvicorn_options(settings))
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """How uvicorn serves the app: where `settings` say, with their limits on the request
    head (server.http_protocol); the request middleware logs each request."""
    from server.http_protocol import guarded_http

    return {
        "host": settings.host,
        "port": settings.port,
        "http": guarded_http(settings),
        "log_config": None,
        "access_log": False,
        "server_header": False,  # no "server: uvicorn": answers do not name the software
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,  # a float works: asyncio.timeout
    }
