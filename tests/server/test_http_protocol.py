"""Limits on the request head (server.http_protocol), on a real uvicorn server over raw
sockets: a head that trickles or never comes, and one without end, are answered and closed;
the requests of a well-behaved client are not."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from server.http_protocol import KEEP_AT_MOST, CoalescingTransport
from tests.server.conftest import LiveServer

HEALTH = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n"


def _connect(server: LiveServer) -> socket.socket:
    host, port = server.address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response: status, headers (lower-case names) and body. Reads byte by
    byte up to the body, so a pipelined response after it stays in the socket."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"connection closed before a whole response head; got {head!r}"
        head += byte
    status_line, *lines = head.decode("latin-1").strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = b""
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(int(headers["content-length"]) - len(body))
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def guarded(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(header_timeout_s=0.5, max_header_bytes=4096)


def _still_serving(server: LiveServer) -> None:
    with _connect(server) as sock:
        sock.sendall(HEALTH)
        assert _response(sock)[0] == 200


def test_a_head_that_does_not_complete_in_time_gets_408_and_the_connection_closes(
    guarded: LiveServer,
) -> None:
    with _connect(guarded) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n")  # no blank line
        started = time.monotonic()
        status, headers, body = _response(sock)
        assert status == 408 and headers["connection"] == "close" and "date" in headers
        assert json.loads(body) == {
            "error": "the request line and headers did not arrive within 0.5 s (--header-timeout-s)"
        }
        assert time.monotonic() - started < 5
        assert _closed(sock)
    _still_serving(guarded)


def test_a_connection_that_sends_nothing_is_closed(guarded: LiveServer) -> None:
    with _connect(guarded) as sock:
        assert _closed(sock)  # within the socket's 10 s timeout: the server's 0.5 s


@pytest.mark.parametrize("complete", [False, True], ids=["endless", "one large head"])
def test_a_head_over_the_limit_gets_431_and_the_connection_closes(
    guarded: LiveServer, complete: bool
) -> None:
    lines = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 100) for i in range(60))
    with _connect(guarded) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n" + lines)
        if complete:
            sock.sendall(b"\r\n")
        status, headers, body = _response(sock)
        assert status == 431 and headers["connection"] == "close"
        assert json.loads(body)["error"] == (
            "the request line and headers exceed 4096 bytes (--max-header-bytes)"
        )
        assert _closed(sock)
    _still_serving(guarded)


def test_no_answer_names_the_server_software_and_every_answer_is_dated(
    guarded: LiveServer,
) -> None:
    """Neither a routed answer, a 404 nor the protocol's own 431 says `server: uvicorn`;
    each carries a `date`."""
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 100) for i in range(60))
    requests = (HEALTH, b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n", HEALTH[:-2] + filler)
    for request, expected in zip(requests, (200, 404, 431), strict=True):
        with _connect(guarded) as sock:
            sock.sendall(request + b"\r\n" * (expected == 431))
            status, headers, _ = _response(sock)
            assert status == expected
            assert "server" not in headers
            assert "date" in headers  # RFC 9110: a 4xx from a server with a clock carries one


def test_a_slow_head_within_the_timeout_and_an_idle_kept_alive_connection_are_served(
    guarded: LiveServer,
) -> None:
    with _connect(guarded) as sock:
        sock.sendall(HEALTH[:20])
        time.sleep(0.3)
        sock.sendall(HEALTH[20:])
        assert _response(sock)[0] == 200
        time.sleep(1.0)  # idle between requests: keep-alive's to time, not the head's
        sock.sendall(HEALTH)
        assert _response(sock)[0] == 200


def test_a_large_body_and_the_next_request_in_one_write_are_both_served(
    guarded: LiveServer, digit_images: Any
) -> None:
    """The head's size is its own: the body before the next request's head in the same
    chunk of data does not count."""
    x = digit_images[0][:1]
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    body = json.dumps({"inputs": [{**tensor, "data": x.reshape(-1).tolist()}]}).encode()
    body += b" " * 200_000  # JSON allows the whitespace; far more than the head's limit
    post = (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    with _connect(guarded) as sock:
        sock.sendall(post + HEALTH)
        status, _, answer = _response(sock)
        assert status == 200, answer
        assert _response(sock)[0] == 200


def test_a_response_asking_to_close_is_sent_whole_before_the_connection_closes(
    guarded: LiveServer,
) -> None:
    """The transport keeps writes until the loop's next turn; closing must send them first."""
    with _connect(guarded) as sock:
        sock.sendall(HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        status, headers, body = _response(sock)
        assert status == 200 and json.loads(body) == {"live": True}
        assert headers["connection"] == "close"
        assert _closed(sock)


def test_writes_in_one_turn_of_the_loop_leave_together_and_closing_sends_what_is_kept() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        coalescing = CoalescingTransport(transport, loop)  # type: ignore[arg-type]
        coalescing.write(b"HTTP/1.1 200 OK\r\n\r\n")
        coalescing.writelines([b"bo", b"dy"])  # kept in order, like write
        assert coalescing.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody")
        with pytest.raises(BlockingIOError):  # nothing has left yet
            theirs.recv(100)
        await asyncio.sleep(0)  # one turn of the loop
        assert theirs.recv(100) == b"HTTP/1.1 200 OK\r\n\r\nbody"  # both, in one piece
        large = b"x" * KEEP_AT_MOST
        coalescing.write(large)  # at the limit: it leaves without waiting for the loop
        received = b""
        while len(received) < len(large):
            received += theirs.recv(len(large))
        assert received == large
        coalescing.write(b"last")
        coalescing.close()
        await asyncio.sleep(0.05)
        assert theirs.recv(100) == b"last"
        assert theirs.recv(100) == b""  # then the end of the connection
        theirs.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("case", ["413 before the body", "408 for a stalled body"])
def test_an_answer_before_the_whole_body_closes_the_connection(
    serve: Callable[..., LiveServer], case: str
) -> None:
    """The rest of the body would be read as the next request (which then got no answer):
    such an answer says Connection: close, and the connection is closed."""
    server = serve(max_body_bytes=1024, body_timeout_s=0.5)
    head = (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    )
    with _connect(server) as sock:
        if case == "413 before the body":  # as curl asks before a large upload
            sock.sendall(head + b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        else:
            sock.sendall(head + b"Content-Length: 100\r\n\r\n" + b'{"inputs":')
        status, headers, _ = _response(sock)
        assert status == (413 if case.startswith("413") else 408)
        assert headers["connection"] == "close"
        assert _closed(sock)
    _still_serving(server)


def test_a_request_whose_body_was_read_keeps_its_connection_after_an_error(
    guarded: LiveServer,
) -> None:
    body = b'{"inputs": []}'
    with _connect(guarded) as sock:
        sock.sendall(
            b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        status, headers, _ = _response(sock)
        assert status == 400 and "connection" not in headers
        sock.sendall(HEALTH)  # the same connection serves the next request
        assert _response(sock)[0] == 200


def test_a_refused_pipelined_head_is_answered_after_the_requests_before_it(
    guarded: LiveServer,
) -> None:
    """A valid request and one whose head is too large, in one write: the first is answered
    first; the refusal (431) no longer takes its place."""
    too_large = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    with _connect(guarded) as sock:
        sock.sendall(HEALTH + too_large)
        status, _, body = _response(sock)
        assert status == 200 and json.loads(body) == {"live": True}
        assert _response(sock)[0] == 431
        assert _closed(sock)
