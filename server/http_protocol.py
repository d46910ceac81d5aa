"""uvicorn's httptools protocol with limits on the request head (the request line and
headers), which uvicorn leaves open: a connection that trickles its head, or never sends
one, was held open for good, and header lines were taken without end (96 MiB of them cost
the server 108 MB and got no answer). As nginx's client_header_timeout and
large_client_header_buffers do: a head not complete within `header_timeout_s` of the
connection opening or the request beginning gets 408 (a connection that sent nothing is
only closed), and one larger than `max_header_bytes` gets 431; both close the connection.
Everything after the head (the body's own timeout, its size) is the request middleware's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.errors import ErrorResponse
from server.settings import ServerSettings

log = logging.getLogger("snapens.server")


# Beyond this, writes leave at once: a body streamed without yielding to the loop would
# otherwise pile up here, out of reach of the transport's flow control.
KEEP_AT_MOST = 64 * 1024


class CoalescingTransport:
    """A transport whose writes within one turn of the event loop leave in one system call.

    uvicorn writes a response's status line and headers, then its body: two `send` calls
    and, with TCP_NODELAY, two segments, each waking the client. Here the writes are kept
    until the loop's next turn (no timer: what is ready is sent as soon as the handler
    yields) and leave together; closing sends what is kept first. What a caller of the
    transport sees of its buffer counts what is kept; aborting drops it, as it drops the
    transport's own buffer."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._kept: list[bytes] = []
        self._kept_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._kept:
            self._loop.call_soon(self._flush)
        self._kept.append(data)
        self._kept_bytes += len(data)
        if self._kept_bytes >= KEEP_AT_MOST:  # a large body goes now, under flow control
            self._flush()

    def _flush(self) -> None:
        kept, self._kept, self._kept_bytes = self._kept, [], 0
        if kept and not self._transport.is_closing():
            self._transport.writelines(kept)

    def writelines(self, lines: Iterable[bytes]) -> None:
        for data in lines:
            self.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._kept_bytes

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    head_timeout_s: float = 10.0
    max_head_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_begun = False  # a byte of this request has arrived, its head is not complete
        self._refused = False
        self._deferred: tuple[HTTPStatus, str] | None = None  # a refusal awaiting earlier answers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if not self._head_begun or self._refused:
            return
        if self._head_bytes > self.max_head_bytes:
            self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, self._too_large())
        elif self._head_timer is None:  # a head left incomplete by this data: time it
            self._arm()

    # Parser callbacks: the head's size is counted as it is parsed (a chunk of data may
    # also hold the body, or the next request). A head that arrives whole in one chunk of
    # data, as nearly all do, is never timed: the timer is armed when a connection opens
    # and when a chunk leaves a head incomplete.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes, self._head_begun = 0, True

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_begun = False
        if self._head_bytes > self.max_head_bytes:
            self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, self._too_large())
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _too_large(self) -> str:
        return (
            f"the request line and headers exceed {self.max_head_bytes} bytes (--max-header-bytes)"
        )

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if not self._head_begun:  # nothing of a request has arrived: close, as keep-alive does
            self._refused = True
            self.transport.close()
            return
        self._refuse(
            HTTPStatus.REQUEST_TIMEOUT,
            f"the request line and headers did not arrive within {self.head_timeout_s:g} s "
            "(--header-timeout-s)",
        )

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer `status` with the server's JSON error and close the connection: at once,
        or, where earlier requests on the connection are still being answered (pipelined),
        after the last of their answers, so the refusal never takes one's place."""
        self._refused = True
        self._disarm()
        log.info("closed a connection from %s: %s", self.client, message)
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            self._deferred = (status, message)
            return
        self._send_refusal(status, message)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = not self.pipeline and (self.cycle is None or self.cycle.response_complete)
        if self._deferred is not None and idle and not self.transport.is_closing():
            status, message = self._deferred
            self._deferred = None
            self._send_refusal(status, message)

    def _send_refusal(self, status: HTTPStatus, message: str) -> None:
        """The refusal with the headers uvicorn gives every answer: `date`, which RFC 9110
        asks of a 4xx from a server with a clock."""
        body = ErrorResponse(error=message).model_dump_json().encode()
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("latin-1")]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\n"
            b"content-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def guarded_http(settings: ServerSettings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn runs, with `settings`' limits on the request head."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"head_timeout_s": settings.header_timeout_s, "max_head_bytes": settings.max_header_bytes},
    )
