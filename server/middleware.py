"""One ASGI middleware for every request: a request id (from X-Request-ID or new), the
body-size limits (per request, and summed over the requests being answered), Prometheus
counts and latencies by route template, an access log, and the one place an unexpected
exception is logged (once, with the request id) and answered."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import Busy, PayloadTooLarge, ServingError, error_response
from server.logs import request_id
from server.metrics import Metrics

access = logging.getLogger("snapens.access")
log = logging.getLogger("snapens.server")


# What the logs and metrics record for a client that left before its answer (nginx's
# code): no fault of the server, so not a 5xx that would set off its alerts.
CLIENT_CLOSED_REQUEST = 499
SHUTTING_DOWN = "the server stopped before the answer was ready; send the request again"


class BodyTooLarge(PayloadTooLarge):
    pass


class BodyTimeout(ServingError):
    status = 408


@dataclass(frozen=True)
class BodyPace:
    """How slowly a request body may arrive: no part of it for `timeout_s` is a stall, and
    after the first `grace_s` of reading it, fewer than `min_rate` bytes a second on
    average is a trickle (as Kestrel's MinRequestBodyDataRate): a client sending a byte
    every few seconds would otherwise hold its connection for as long as its declared
    length lasts. Both get 408. `min_rate` 0: no rate."""

    timeout_s: float
    min_rate: float = 0.0
    grace_s: float = 5.0

    def wait(self, started: float, received: int, now: float) -> tuple[float, bool]:
        """How long to wait for the next part of the body, read since `started` with
        `received` bytes so far, and whether it is the rate that sets that wait."""
        if self.min_rate <= 0:
            return self.timeout_s, False
        below_rate = started + self.grace_s + received / self.min_rate - now
        if below_rate < self.timeout_s:
            return max(below_rate, 0.0), True
        return self.timeout_s, False


@dataclass
class BodyBudget:
    """Request-body bytes the server holds at once, summed over the requests being
    answered (a request's bytes count from their arrival until its answer is sent), and
    the most it may: beyond, a request gets 503 instead of the server running out of
    memory."""

    limit: int
    gauge: Gauge | None = None  # where the bytes held are shown
    held: int = 0

    def take(self, size: int) -> None:
        self.held += size
        if self.gauge is not None:
            self.gauge.set(self.held)

    def give(self, size: int) -> None:
        self.held -= size
        if self.gauge is not None:
            self.gauge.set(self.held)


class RequestContext:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        pace: BodyPace,
        budget: BodyBudget,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limit = max_body_bytes
        self.pace = pace
        self.budget = budget
        self._known: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def _busy(self, more: int) -> Busy:
        return Busy(
            f"the server holds {self.budget.held} bytes of request bodies and takes at most "
            f"{self.budget.limit} at once; {more} more do not fit: send again shortly"
        )

    def _refusal(self, content_length: bytes) -> ServingError | None:
        """The error for a body whose declared length passes either limit, if it does."""
        if not content_length.isdigit():
            return None
        declared = int(content_length)
        if declared > self.limit:
            return BodyTooLarge(
                f"request body of {declared} bytes exceeds the limit of {self.limit} bytes"
            )
        if self.budget.held + declared > self.budget.limit:
            return self._busy(declared)
        return None

    def _too_slow(self, by_rate: bool, received: int, since: float) -> BodyTimeout:
        if not by_rate:
            return BodyTimeout(f"no part of the request body arrived for {self.pace.timeout_s:g} s")
        elapsed = max(time.perf_counter() - since, 1e-6)
        return BodyTimeout(
            f"the request body arrived at {received / elapsed:.0f} bytes/s ({received} bytes "
            f"in {elapsed:.1f} s); at least {self.pace.min_rate:g} bytes/s expected after "
            f"the first {self.pace.grace_s:g} s"
        )

    def _series(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        """The request counter's and the latency histogram's series for these labels,
        looked up once (labels() costs about a microsecond a call; the methods the HTTP
        parser accepts, the route templates and the statuses are few)."""
        key = (method, route, status)
        series = self._known.get(key)
        if series is None:
            series = self._known[key] = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.latency.labels(method, route),
            )
        return series

    @staticmethod
    def _route(scope: Scope) -> str:
        """The matched route's template (bounded label cardinality); the router records it
        in the scope it shares with us."""
        return str(getattr(scope.get("route"), "path", "unmatched"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":  # to a client gone: nobody gets it
                status = CLIENT_CLOSED_REQUEST if disconnected else message["status"]
                started_response = True
                message.setdefault("headers", [])
                added = [(b"x-request-id", rid.encode("latin-1"))]
                if body_pending():  # the rest would be read as the next request: close
                    added.append((b"connection", b"close"))
                message["headers"] = [*message["headers"], *added]
            await send(message)

        def body_pending() -> bool:
            """Whether an answer starts before the request's body has all arrived (a 413
            or 503 refused on its declared length, a 408 for a stalled body)."""
            if body_done:
                return False
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                return True
            declared = headers.get(b"content-length", b"0")
            return declared.isdigit() and int(declared) > received

        received = 0  # this request's body bytes, held in the budget until it ends
        disconnected = False
        body_done = scope["method"] in ("GET", "HEAD")
        reading_since: float | None = None

        async def limited_receive() -> Message:
            nonlocal received, disconnected, body_done, reading_since
            if body_done:  # afterwards the app only listens for a disconnect: no timeout
                message = await receive()
            else:
                now = time.perf_counter()
                if reading_since is None:
                    reading_since = now
                wait, by_rate = self.pace.wait(reading_since, received, now)
                try:  # a timer on this task, not wait_for's extra task per request
                    async with asyncio.timeout(wait):
                        message = await receive()
                except TimeoutError:
                    raise self._too_slow(by_rate, received, reading_since) from None
                body_done = not message.get("more_body", False)
            if message["type"] == "http.disconnect":
                disconnected = True
            elif message["type"] == "http.request":
                size = len(message.get("body", b""))
                if received + size > self.limit:
                    raise BodyTooLarge(f"request body exceeds the limit of {self.limit} bytes")
                if self.budget.held + size > self.budget.limit:
                    raise self._busy(size)
                received += size
                self.budget.take(size)
            return message

        try:
            refusal = self._refusal(headers.get(b"content-length", b""))
            if refusal is not None:  # before any of the body is read
                await refusal.response()(scope, receive, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when --graceful-shutdown-s is up; the task
            # ends here, answered, rather than in uvicorn's plain-text 500 and traceback.
            if not (disconnected or started_response):
                log.warning("stopped before the answer to %s %s", scope["method"], scope["path"])
                await error_response(503, SHUTTING_DOWN)(scope, receive, send_with_id)
        except Exception:
            if not (disconnected and not started_response):  # else: nobody left to answer
                log.exception("unexpected error on %s %s", scope["method"], scope["path"])
                if started_response:
                    raise
                await error_response(500, "internal server error")(scope, receive, send_with_id)
        finally:
            if received:
                self.budget.give(received)
            if disconnected and not started_response:
                status = CLIENT_CLOSED_REQUEST
            elapsed = time.perf_counter() - started
            route = self._route(scope)
            method = scope["method"]
            count, latency = self._series(method, route, status)
            count.inc()
            latency.observe(elapsed)
            access.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "fields": {
                        "method": method,
                        "path": scope["path"],
                        "status": status,
                        "ms": round(1000 * elapsed, 2),
                    }
                },
            )
            request_id.reset(token)
