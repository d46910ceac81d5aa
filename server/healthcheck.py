"""`python -m server.healthcheck`: exit 0 when the server on this host is ready, else 1.

The container HEALTHCHECK: the slim serving image has no curl, and this needs only the
server's own settings. It asks `/v2/health/ready` where the server listens: the port and
host it was started with, read the way the server reads them (its flags, then
`SNAPENS_*` variables, then `.env`). The flags are those of the container's first
process, where that is `python -m server` (a `docker run IMAGE --port 9000` passes them
there; the check runs beside it and sees the same environment). A server listening on
every address is asked on the loopback. Health routes are exempt from the API key, so
none is sent."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from server.cli import settings_from

TIMEOUT_S = 3.0
FIRST_PROCESS = Path("/proc/1/cmdline")
EVERY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def server_flags(cmdline: bytes) -> list[str]:
    """The flags of a `python -m server ...` command line (as /proc gives it, NUL-separated);
    none where it is another command."""
    args = [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]
    for i in range(len(args) - 1):
        if args[i] == "-m" and args[i + 1] == "server":
            return args[i + 2 :]
    return []


def ready_url(flags: list[str]) -> str:
    """Where the server started with `flags` (and this environment) answers readiness."""
    settings = settings_from(flags)
    host = EVERY_ADDRESS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/v2/health/ready"


def is_ready(url: str) -> bool:
    # No proxies: an HTTP(S)_PROXY in the container's environment must not catch a
    # request meant for the loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:  # 503 while no model is loaded yet
        print(f"not ready: {url} answered {exc.code}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
    return False


def main() -> int:
    try:
        cmdline = FIRST_PROCESS.read_bytes()
    except OSError:  # not Linux, or no /proc
        cmdline = b""
    return 0 if is_ready(ready_url(server_flags(cmdline))) else 1


if __name__ == "__main__":
    raise SystemExit(main())
