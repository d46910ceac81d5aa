"""Dynamic batching: concurrent requests for a model wait to be run together as one batch
of at most `max_rows` rows, then each gets its own slice of the result.

The wait is adaptive: it is spent only under concurrency, and only while the requests
of the last round are still coming back. When a batch is answered, the requests it held and
those that queued behind it are the clients of this round; the next batch waits until that
many requests are queued, so the clients answered a moment ago join the ones that waited,
instead of two halves alternating in batches of half the size. It waits only while they
keep arriving: at most `max_delay` after the latest arrival (or after the worker became
free), so a client that has gone costs one quiet `max_delay`, not a stall. A request that
arrives alone runs at once, so batching adds no latency at low load.

A request may ask for more members than the served ones (a larger m); a batch runs the
members its most demanding request needs, and each request takes its own last m.

`session.run` releases the GIL, so batches run on worker threads while the event loop
keeps accepting requests; up to `workers` batches may be in flight at once. With several
workers the round is shared between them: each batch waits for, and takes, at most its
share of the round's requests, so the workers run side by side instead of one taking the
whole round while the others idle. The ensemble arithmetic for the whole batch runs on
the worker thread too, and each request gets its rows of it. The runtime is looked up
per batch: after a hot reload the next batch runs on the new snapshot set while a batch
already running finishes on the old one. A failing batch fails only the requests that
cause it: it is run again a request at a time.

With several server processes (`--workers`), a batch that runs while no other process
serves clients runs on the sessions that use every core (server.board).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from server.board import ProcessBoard
from server.errors import Conflict
from server.metrics import Metrics
from server.runtime import BatchAnswer, EnsembleRuntime, Float32Array


@dataclass
class _Pending:
    x: Float32Array
    members: int | None  # the last m members it needs; None: the served ones
    future: asyncio.Future[tuple[BatchAnswer, EnsembleRuntime]]
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        runtime: Callable[[], EnsembleRuntime],
        max_rows: int,
        max_delay_s: float,
        metrics: Metrics,
        workers: int = 1,
        board: ProcessBoard | None = None,
    ) -> None:
        self.name = name
        self._runtime = runtime
        self._max_rows = max_rows
        self._max_delay = max_delay_s
        # This model's series, looked up once (labels() costs about a microsecond a call).
        self._queue_wait = metrics.queue.labels(name)
        self._batch_rows = metrics.batch.labels(name)
        self._inference = metrics.inference.labels(name)
        self._pending: deque[_Pending] = deque()
        self._rows = 0
        self._wakeup = asyncio.Event()
        self._workers = workers
        self._board = board or ProcessBoard.single()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"infer-{name}")
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._round = 0  # requests of the last round: its batch and those queued behind it
        self._in_flight = 0  # requests taken by a worker and not yet answered
        self._free_since = time.perf_counter()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name=f"batcher-{self.name}-{i}")
            for i in range(self._workers)
        ]

    async def submit(
        self, x: Float32Array, members: int | None = None
    ) -> tuple[BatchAnswer, EnsembleRuntime]:
        """The answer for x [n, C, H, W] with the probabilities of at least the last
        `members` members (None: the served ones), and the runtime (snapshot set) that
        made it."""
        if self._closing:
            raise RuntimeError("the batcher is shutting down")
        future: asyncio.Future[tuple[BatchAnswer, EnsembleRuntime]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.append(_Pending(x, members, future))
        self._rows += len(x)
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Finish every queued request, then stop."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks)
        self._executor.shutdown(wait=True)

    async def _fill(self) -> None:
        """Under concurrency, wait until the last round's requests are queued again (or
        the batch is full, or none has arrived for max_delay since the latest did and the
        worker became free)."""
        if self._round <= 1:
            return
        while (
            self._pending  # another worker may take them while this one waits
            and self._rows < self._max_rows
            and len(self._pending) < self._share()
            and not self._closing
        ):
            deadline = max(self._free_since, self._pending[-1].enqueued) + self._max_delay
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _share(self) -> int:
        """The requests one batch waits for and takes: the round's (or, before there is
        one, those queued and running), divided between the workers."""
        clients = max(self._round, len(self._pending) + self._in_flight)
        return max(1, -(-clients // self._workers))

    def _take(self) -> list[_Pending]:
        """Requests for one batch: whole requests up to max_rows (a larger one goes alone),
        and with several workers up to this worker's share (one worker's share is at least
        every request queued)."""
        most = self._share()
        batch = [self._pending.popleft()]
        rows = len(batch[0].x)
        while (
            self._pending and len(batch) < most and rows + len(self._pending[0].x) <= self._max_rows
        ):
            item = self._pending.popleft()
            batch.append(item)
            rows += len(item.x)
        self._rows -= rows
        return batch

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._fill()
            if not self._pending:  # another worker took them while this one waited
                continue
            batch = self._take()
            started = time.perf_counter()
            for item in batch:
                self._queue_wait.observe(started - item.enqueued)
            self._in_flight += len(batch)
            await self._answer(batch)
            self._in_flight -= len(batch)
            # With several workers, the requests another worker is running are of this round.
            self._round = len(batch) + len(self._pending) + self._in_flight
            self._free_since = time.perf_counter()

    @staticmethod
    def _fitting(batch: list[_Pending], runtime: EnsembleRuntime) -> list[_Pending]:
        """The requests that fit the set about to run them; each other one, decoded for
        the input of a set a reload has since replaced, gets a 409 saying so. A request
        already settled (cancelled when the server stops) is not run."""
        shape = tuple(runtime.manifest.input.shape[1:])
        fits = []
        for item in batch:
            if item.future.done():
                continue
            if tuple(item.x.shape[1:]) == shape:
                fits.append(item)
            else:
                item.future.set_exception(
                    Conflict(
                        f"the model was reloaded while the request waited and now takes "
                        f"[N, {', '.join(map(str, shape))}], not "
                        f"[N, {', '.join(map(str, item.x.shape[1:]))}]; send it again for "
                        "the new input"
                    )
                )
        return fits

    async def _answer(self, batch: list[_Pending]) -> None:
        """Run one batch on the current snapshot set and give each request its rows. A batch
        of several requests that fails is run again a request at a time, so an error reaches
        only the request that causes it, and the worker always lives on to the next batch."""
        started = time.perf_counter()
        try:
            runtime = self._runtime()
            batch = self._fitting(batch, runtime)
            if not batch:
                return
            x = batch[0].x if len(batch) == 1 else np.concatenate([item.x for item in batch])
            need = max(item.members or runtime.default_m for item in batch)
            self._batch_rows.observe(len(x))
            alone = self._board.idle()
            self._board.enter()
            try:
                answer = await asyncio.get_running_loop().run_in_executor(
                    self._executor, runtime.answer, x, None, need, alone
                )
            finally:
                self._board.leave()
        except Exception as exc:
            if len(batch) > 1:
                for item in batch:
                    if not item.future.done():
                        await self._answer([item])
            elif not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self._inference.observe(time.perf_counter() - started)
        offset = 0
        for item in batch:
            n = len(item.x)
            if not item.future.done():  # a client may have gone away
                item.future.set_result((answer.rows(offset, offset + n), runtime))
            offset += n
