"""`python -m server.healthcheck`: exit 0 when the server on this host is ready, else 1.

The container HEALTHCHECK: the slim serving image has no curl, and this needs nothing beyond
the standard library. It asks `/v2/health/ready` on the loopback at `SNAPENS_PORT` (default
8000). Health routes are exempt from the API key, so none is sent."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT_S = 3.0


def ready_url(environ: Mapping[str, str]) -> str:
    return f"http://127.0.0.1:{environ.get('SNAPENS_PORT', '8000')}/v2/health/ready"


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
    return 0 if is_ready(ready_url(os.environ)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
