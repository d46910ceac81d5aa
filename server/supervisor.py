"""`--workers N`: N server processes on one port, as uvicorn's and gunicorn's workers,
each loading every model (server.board: its share of the cores, and every core for a
batch alone on the machine).

At concurrency one process's event loop is the limit: between two batches it answers the
round's requests and parses the next ones on one core while onnxruntime waits. With
several processes, one process's loop does that work while another's batch runs
(bench/serve_processes.py).

On Linux each process listens on a socket of its own on the port (SO_REUSEPORT), and the
kernel spreads new connections between them; on one shared socket, the process that
wakes first takes every waiting connection (31 of 31 in a test). A process started while
no other takes connections takes them at once (liveness answers while it loads); the others
only once their first load is done, so none answers 503 while another is ready. The
supervisor starts another process in place of one that dies (its connections are closed
with it) and gives up, exiting 1, if they keep dying (3 if one of the first fails to
start); on SIGTERM, SIGINT or SIGHUP it passes SIGTERM on, so each finishes what it holds
(--graceful-shutdown-s), then exits 0. If the supervisor itself is killed, the kernel
stops the processes (Linux). Metrics are summed over the processes (prometheus_client's
multiprocess mode, in a temporary folder removed at exit).
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

from server.board import LOADING_SEEN, LOADING_UNSEEN
from server.settings import ServerSettings

log = logging.getLogger("snapens.server")

METRICS_FOLDER = "PROMETHEUS_MULTIPROC_DIR"  # what prometheus_client reads at import
STARTUP_FAILURE = 3  # uvicorn's exit status for a server that did not start
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
# What a terminal sends the whole process group, which the supervisor passes on as SIGTERM.
PASSED_ON = {signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGINT)}
RESTARTS = 5  # processes that may die within RESTART_WINDOW_S before the server gives up
RESTART_WINDOW_S = 60.0


def worker_main(
    settings: ServerSettings,
    sock: socket.socket,
    shared: tuple[Any, Any],
    index: int,
    first: bool,
    supervisor: int,
) -> None:
    """One server process (spawned: a fresh interpreter, which imports prometheus_client
    with the metrics folder set)."""
    from server import cli, logs
    from server.board import ProcessBoard

    # Started with SIGINT and SIGHUP blocked (see Supervisor._start): a Ctrl-C or hangup
    # that reached the whole group while this process was being set up was also the
    # supervisor's, which passes it on as SIGTERM. Both are ignored from here on, until
    # uvicorn takes SIGINT over; SIGHUP stays the supervisor's.
    for sig in PASSED_ON:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PASSED_ON)
    stop_with(supervisor)
    logs.configure(settings.log_level, settings.log_format)
    sys.exit(cli.serve(settings, sock, ProcessBoard(*shared, index), answer_while_loading=first))


def stop_with(supervisor: int) -> None:
    """On Linux, have the kernel send this process SIGTERM when the supervisor dies (even
    by SIGKILL), so that no process is left serving the port without it."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def own_sockets() -> bool:
    """Whether each process gets a socket of its own: where the kernel balances them."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to host:port, as uvicorn binds one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._ended = self._context.RawArray("d", [-math.inf] * settings.workers)
        self._loading = self._context.RawArray("b", settings.workers)
        self._processes: dict[int, SpawnProcess] = {}  # by index
        self._restarted: set[int] = set()  # indexes started again after a death
        self._deaths: deque[float] = deque()
        self._stopping = False
        self._shared: socket.socket | None = None  # the one socket, where not own_sockets()
        self._port = settings.port

    def run(self) -> int:
        """Serve until SIGTERM, SIGINT or SIGHUP; the exit status."""
        from server.cli import listening

        try:  # the port checked free, so that no other server's sockets are joined
            sock = bind(self.settings.host, self.settings.port, reuse_port=False)
            if own_sockets():
                self._port = sock.getsockname()[1]
                sock.close()
                sock = bind(self.settings.host, self._port, reuse_port=True)
        except OSError as exc:
            log.error("%s:%d: %s", self.settings.host, self.settings.port, exc)
            return STARTUP_FAILURE
        try:
            folder = tempfile.mkdtemp(prefix="snapens-metrics-")
        except OSError as exc:
            sock.close()
            log.error(
                "--workers needs a writable temporary folder (TMPDIR) for the processes' "
                "metrics: %s",
                exc,
            )
            return STARTUP_FAILURE
        listening(self.settings, sock)
        self._shared = None if own_sockets() else sock
        os.environ[METRICS_FOLDER] = folder
        stops = [signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGTERM)]
        previous = {sig: signal.signal(sig, self._stop) for sig in stops}
        try:
            for index in range(self.settings.workers):
                self._start(index, sock if index == 0 else None)
            return self._watch()
        finally:
            self._stop_all()  # also those started before a failure to start the next
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.environ.pop(METRICS_FOLDER, None)
            shutil.rmtree(folder, ignore_errors=True)
            if self._shared is not None:
                self._shared.close()

    def _start(self, index: int, sock: socket.socket | None = None) -> None:
        """Start process `index` on sock, or on a new socket of its own on the port."""
        if self._shared is not None:
            sock = self._shared
        elif sock is None:
            sock = bind(self.settings.host, self._port, reuse_port=True)
        # Where no other process takes connections, it answers while it loads
        # (liveness); else only once loaded.
        alone = not any(
            p.is_alive() and self._loading[i] != LOADING_UNSEEN
            for i, p in self._processes.items()
            if i != index
        )
        self._ended[index] = -math.inf
        self._loading[index] = LOADING_SEEN if alone else LOADING_UNSEEN
        process = self._context.Process(
            target=worker_main,
            args=(
                self.settings,
                sock,
                (self._ended, self._loading),
                index,
                alone,
                os.getpid(),
            ),
            name=f"snapens-worker-{index}",
        )
        # Ctrl-C or a hangup in a terminal reaches every process of the group. Blocked
        # here while the process starts (a blocked signal stays blocked across exec), one
        # that arrives meanwhile waits for the supervisor, which passes it on as SIGTERM;
        # the process drops its own copy (worker_main), so it stops through that SIGTERM,
        # gracefully, instead of a KeyboardInterrupt traceback mid-import.
        signal.pthread_sigmask(signal.SIG_BLOCK, PASSED_ON)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, PASSED_ON)
            if sock is not self._shared:  # the process holds it: it closes with the process
                sock.close()
        self._processes[index] = process
        log.info("worker %d started (pid %d)", index, process.pid)

    def _watch(self) -> int:
        """Wait for the signal to stop, starting a process in place of one that dies; the
        exit status: 0, or 1 when processes keep dying (3 when one of the first could not
        start)."""
        while not self._stopping:
            sentinels: dict[int, int] = {p.sentinel: i for i, p in self._processes.items()}
            for sentinel in wait(list(sentinels), timeout=0.5):
                index = sentinels[sentinel]  # type: ignore[index]  # a sentinel is an int
                process = self._processes[index]
                process.join()
                if self._stopping:
                    break
                status = process.exitcode
                self._forget(process)
                if status == STARTUP_FAILURE and index not in self._restarted:
                    log.error("worker %d could not start: stopping the server", index)
                    return STARTUP_FAILURE
                now = time.monotonic()
                self._deaths.append(now)
                while self._deaths and self._deaths[0] < now - RESTART_WINDOW_S:
                    self._deaths.popleft()
                if len(self._deaths) > RESTARTS:
                    log.error(
                        "worker %d exited (status %s), %d exits within %.0f s: stopping the server",
                        index,
                        status,
                        len(self._deaths),
                        RESTART_WINDOW_S,
                    )
                    return 1
                log.error("worker %d exited (status %s): starting another", index, status)
                self._restarted.add(index)
                try:
                    self._start(index)
                except OSError as exc:  # the port could not be bound again
                    log.error("worker %d could not be started again: %s", index, exc)
                    return 1
        return 0

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _stop_all(self) -> None:
        """SIGTERM to every process, then wait for each to finish its requests."""
        for process in self._processes.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + self.settings.graceful_shutdown_s + 10.0
        for process in self._processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %d did not stop in time: killed", process.pid)
                process.kill()
                process.join()
            self._forget(process)

    def _forget(self, process: SpawnProcess) -> None:
        """A dead process's live gauges leave the sums."""
        from prometheus_client import multiprocess

        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
