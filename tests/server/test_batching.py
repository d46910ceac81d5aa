"""Dynamic batching (server.batching) on a real runtime: a model folder of tiny onnx.helper
classifiers (tests.server.test_fusion), loaded by EnsembleRuntime on the CPU.

Which requests shared a batch is read from the batcher's own metric, the rows of each
onnxruntime batch (snapens_batch_rows). Requests submitted together all wait before the
batcher's worker runs (asyncio runs ready tasks in order), so the batches are known."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pytest

from server.batching import DynamicBatcher
from server.board import ProcessBoard
from server.errors import Conflict
from server.metrics import Metrics
from server.runtime import BatchAnswer, EnsembleRuntime
from server.settings import RuntimeSettings
from snapens.folder import ModelFolder, SnapshotMeta
from snapens.manifest import InputSpec, Manifest, OutputSpec, utc_now
from tests.server.test_fusion import CLASSES, INPUT, LOGITS, classifier, pixels

NAME = "tiny"
T = TypeVar("T")


def write_model(repository: Path, snapshots: int = 3) -> Path:
    """A model folder of `snapshots` tiny classifiers, as the trainer would write it."""
    folder = ModelFolder(repository, NAME)
    now = utc_now()
    folder.create(
        Manifest(
            name=NAME,
            created_at=now,
            updated_at=now,
            state="training",
            input=InputSpec(name=INPUT, shape=[-1, 1, 8, 8], pixel_range=(0, 16), color_mode="L"),
            output=OutputSpec(name=LOGITS, shape=[-1, CLASSES]),
            classes=[str(k) for k in range(CLASSES)],
            default_m=snapshots,
            snapshots=[],
            training={"dataset": "none: random weights"},
        )
    )
    for cycle in range(1, snapshots + 1):
        meta = SnapshotMeta(cycle, float(cycle), cycle, 0.1, 0.5, 1.0)
        folder.add_snapshot(classifier(seed=cycle).SerializeToString(), meta, 0.0)
    folder.finish()
    return folder.path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def runtime(model_dir: Path) -> EnsembleRuntime:
    return EnsembleRuntime.load(model_dir, None, RuntimeSettings(providers="cpu"))


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """The scenario on a fresh event loop; a hang fails instead of stalling the suite."""

    async def guarded() -> T:
        return await asyncio.wait_for(scenario(), 60)

    return asyncio.run(guarded())


def batches(metrics: Metrics) -> tuple[int, int]:
    """(onnxruntime batches run, rows in them)."""
    count = metrics.registry.get_sample_value("snapens_batch_rows_count", {"model": NAME})
    rows = metrics.registry.get_sample_value("snapens_batch_rows_sum", {"model": NAME})
    return int(count or 0), int(rows or 0)


def batches_up_to(metrics: Metrics, rows: int) -> int:
    """Batches of at most `rows` rows (a bucket bound of snapens_batch_rows)."""
    labels = {"model": NAME, "le": f"{float(rows)}"}
    return int(metrics.registry.get_sample_value("snapens_batch_rows_bucket", labels) or 0)


def assert_own_rows(runtime: EnsembleRuntime, x: np.ndarray, answer: BatchAnswer) -> None:
    """`answer` is the runtime's answer for x alone: the request got its own rows."""
    alone = runtime.answer(x)
    assert answer.prediction.member_probs.shape == (runtime.m, len(x), CLASSES)
    np.testing.assert_allclose(
        answer.prediction.member_probs, alone.prediction.member_probs, atol=1e-6
    )
    np.testing.assert_allclose(answer.result.probabilities, alone.result.probabilities, atol=1e-6)
    np.testing.assert_array_equal(answer.result.label, alone.result.label)


def requests(*rows: int) -> list[np.ndarray]:
    return [pixels(n, seed=i) for i, n in enumerate(rows)]


def test_waiting_requests_fill_one_batch_and_each_gets_its_own_rows_in_order(
    runtime: EnsembleRuntime,
) -> None:
    metrics = Metrics()
    xs = requests(1, 2, 3, 4)

    async def scenario() -> list[tuple[BatchAnswer, EnsembleRuntime]]:
        batcher = DynamicBatcher(NAME, lambda: runtime, 64, 0.0, metrics)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit(x) for x in xs))
        await batcher.close()
        return answers

    answers = run(scenario)
    assert batches(metrics) == (1, 10)  # the four requests ran as one batch
    for x, (answer, used) in zip(xs, answers, strict=True):
        assert used is runtime
        assert_own_rows(runtime, x, answer)


def test_a_request_cancelled_while_it_waits_is_not_run(runtime: EnsembleRuntime) -> None:
    """Cancelled (as uvicorn cancels requests when the server stops): no onnxruntime time."""
    metrics = Metrics()
    xs = requests(1, 2, 3, 4)

    async def scenario() -> list[tuple[BatchAnswer, EnsembleRuntime]]:
        batcher = DynamicBatcher(NAME, lambda: runtime, 64, 0.0, metrics)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit(x)) for x in xs]
        await asyncio.sleep(0)  # every request queued, none run yet
        tasks[1].cancel()
        tasks[3].cancel()
        answers = await asyncio.gather(tasks[0], tasks[2])
        await batcher.close()
        return answers

    answers = run(scenario)
    assert batches(metrics) == (1, 4)  # the rows of requests 1 and 3 only
    for x, (answer, _) in zip((xs[0], xs[2]), answers, strict=True):
        assert_own_rows(runtime, x, answer)


def test_a_batch_holds_at_most_max_rows_and_a_larger_request_runs_alone(
    runtime: EnsembleRuntime,
) -> None:
    metrics = Metrics()
    xs = requests(1, 3, 2, 2, 4, 1, 6)  # batches of 4 rows: [1, 3] [2, 2] [4] [1], then [6]

    async def scenario() -> list[tuple[BatchAnswer, EnsembleRuntime]]:
        batcher = DynamicBatcher(NAME, lambda: runtime, 4, 0.0, metrics)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit(x) for x in xs))
        await batcher.close()
        return answers

    answers = run(scenario)
    assert batches(metrics) == (5, 19)
    assert batches_up_to(metrics, 4) == 4  # every batch but the 6-row request's alone
    for x, (answer, _) in zip(xs, answers, strict=True):
        assert_own_rows(runtime, x, answer)


def closed_loop(
    batcher: DynamicBatcher, rounds: int, x: np.ndarray
) -> Coroutine[Any, Any, list[tuple[BatchAnswer, EnsembleRuntime]]]:
    """A client that sends its next request as soon as it has the answer to the last."""

    async def client() -> list[tuple[BatchAnswer, EnsembleRuntime]]:
        return [await batcher.submit(x) for _ in range(rounds)]

    return client()


def test_clients_answered_together_are_batched_together_again(runtime: EnsembleRuntime) -> None:
    """Eight closed-loop clients: each round's batch waits for the eight to be back and no
    longer (max_delay is far beyond the test's time limit)."""
    metrics = Metrics()

    async def scenario() -> None:
        batcher = DynamicBatcher(NAME, lambda: runtime, 64, 30.0, metrics)
        batcher.start()
        await asyncio.gather(*(closed_loop(batcher, 6, pixels(1, seed=i)) for i in range(8)))
        await batcher.close()

    run(scenario)
    assert batches(metrics) == (6, 48)


def test_two_halves_of_the_clients_merge_instead_of_alternating(
    runtime: EnsembleRuntime,
) -> None:
    """Four clients start; four more join while the first batch runs. From the next batch
    on, the four just answered join the four that waited: batches of 8, not 4, 4, 4, ..."""
    metrics = Metrics()
    rounds = 5

    async def scenario() -> None:
        late: list[asyncio.Task[Any]] = []

        def current() -> EnsembleRuntime:  # called as each batch starts
            if not late:
                late.extend(
                    asyncio.create_task(closed_loop(batcher, rounds, pixels(1, seed=i)))
                    for i in range(4, 8)
                )
            return runtime

        batcher = DynamicBatcher(NAME, current, 64, 2.0, metrics)
        batcher.start()
        await asyncio.gather(*(closed_loop(batcher, rounds, pixels(1, seed=i)) for i in range(4)))
        await asyncio.gather(*late)
        await batcher.close()

    run(scenario)
    # [early 4] [8] x (rounds - 1) [the late clients' last 4]
    assert batches(metrics) == (rounds + 1, 8 * rounds)
    assert batches_up_to(metrics, 4) == 2


def test_a_client_that_leaves_costs_one_quiet_delay_not_a_stall(runtime: EnsembleRuntime) -> None:
    """Four clients, one of which stops after its first request: the next batch waits for
    the round of four only while requests keep arriving, then runs the three there are."""
    metrics = Metrics()

    async def scenario() -> None:
        batcher = DynamicBatcher(NAME, lambda: runtime, 64, 0.05, metrics)
        batcher.start()
        clients = [closed_loop(batcher, n, pixels(1, seed=i)) for i, n in enumerate((3, 3, 3, 1))]
        await asyncio.gather(*clients)
        await batcher.close()

    run(scenario)
    assert batches(metrics) == (3, 4 + 3 + 3)


class Rendezvous:
    """The runtime, whose first `parties` batches each wait at a barrier until all of them
    are running: if the batcher never runs them at the same time, the barrier breaks (after
    `timeout` s) and those batches fail."""

    def __init__(self, runtime: EnsembleRuntime, parties: int, timeout: float = 20.0) -> None:
        self.runtime = runtime
        self.barrier = threading.Barrier(parties, timeout=timeout)
        self.waiting = parties
        self.lock = threading.Lock()

    def answer(self, *args: Any) -> BatchAnswer:
        with self.lock:
            meet, self.waiting = self.waiting > 0, self.waiting - 1
        if meet:
            self.barrier.wait()
        return self.runtime.answer(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)


def test_several_workers_share_a_round_and_run_side_by_side(runtime: EnsembleRuntime) -> None:
    """Two workers and eight clients: each batch takes its share of the round (four), so
    the two workers' batches run at the same time (before, one worker took all eight and
    the other idled). Every request gets its own rows."""
    metrics = Metrics()
    meeting = Rendezvous(runtime, parties=2)
    xs = [pixels(1, seed=i) for i in range(8)]

    async def scenario() -> list[list[tuple[BatchAnswer, EnsembleRuntime]]]:
        batcher = DynamicBatcher(NAME, lambda: cast(EnsembleRuntime, meeting), 64, 0.05, metrics, 2)
        batcher.start()
        answers = await asyncio.gather(*(closed_loop(batcher, 3, x) for x in xs))
        await batcher.close()
        return answers

    answers = run(scenario)
    count, rows = batches(metrics)
    assert rows == 24 and batches_up_to(metrics, 4) == count  # no batch took the whole round
    for x, client in zip(xs, answers, strict=True):
        for answer, _ in client:
            assert_own_rows(runtime, x, answer)


def test_a_worker_whose_requests_another_worker_took_waits_for_the_next(
    runtime: EnsembleRuntime,
) -> None:
    """Two free workers both wait for the next round's requests; when they are back, one
    takes them. The other goes back to waiting (before, it failed on the empty queue and
    stopped for good, and the server's shutdown failed with it)."""
    metrics = Metrics()

    async def staggered(batcher: DynamicBatcher, index: int) -> int:
        for _ in range(4):
            await batcher.submit(pixels(1, seed=index))
            await asyncio.sleep(0.005 * index)  # the round comes back one by one
        return index

    async def scenario() -> list[int]:
        batcher = DynamicBatcher(NAME, lambda: runtime, 64, 5.0, metrics, 2)
        batcher.start()
        done = await asyncio.gather(*(staggered(batcher, i) for i in range(4)))
        await batcher.close()  # gathers the workers: raises if one has failed
        return done

    assert run(scenario) == [0, 1, 2, 3]
    assert batches(metrics)[1] == 16


def test_an_error_reaches_only_the_request_that_causes_it(runtime: EnsembleRuntime) -> None:
    """A request onnxruntime refuses (float64 pixels) fails alone, whether it ran in a batch
    of its own or was batched with others; every other request gets its answer."""
    metrics = Metrics()
    bad = np.zeros((2, 1, 8, 8), dtype=np.float64)
    xs = requests(2, 2, 1, 1)
    # Batches of at most 2 rows: [x0] [bad] [x1] [x2, bad[:1]] [x3].
    submitted = [xs[0], bad, xs[1], xs[2], bad[:1], xs[3]]

    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(NAME, lambda: runtime, 2, 0.0, metrics)
        batcher.start()
        first = await asyncio.gather(
            *(batcher.submit(x) for x in submitted), return_exceptions=True
        )
        after = await batcher.submit(xs[0])  # the worker lives on
        await batcher.close()
        return [*first, after]

    results = run(scenario)
    errors = [i for i, result in enumerate(results) if isinstance(result, BaseException)]
    assert errors == [1, 4]
    # [x0] [bad] [x1]; [x2, bad[:1]] fails, so each runs again alone; [x3]; the last.
    assert batches(metrics)[0] == 8
    for i, x in ((0, xs[0]), (2, xs[1]), (3, xs[2]), (5, xs[3]), (6, xs[0])):
        assert_own_rows(runtime, x, results[i][0])


def test_close_answers_every_queued_request_then_refuses_new_ones(
    runtime: EnsembleRuntime,
) -> None:
    metrics = Metrics()
    xs = requests(2, 2, 2, 2, 2)

    async def scenario() -> list[tuple[BatchAnswer, EnsembleRuntime]]:
        batcher = DynamicBatcher(NAME, lambda: runtime, 2, 0.0, metrics)
        batcher.start()
        waiting = [asyncio.create_task(batcher.submit(x)) for x in xs]
        await asyncio.sleep(0)  # every request is queued, none has run
        assert batches(metrics) == (0, 0)
        await batcher.close()
        assert batches(metrics) == (5, 10)  # close ran every queued batch before returning
        with pytest.raises(RuntimeError, match="shutting down"):
            await batcher.submit(xs[0])
        return await asyncio.gather(*waiting)

    answers = run(scenario)
    for x, (answer, _) in zip(xs, answers, strict=True):
        assert_own_rows(runtime, x, answer)


def test_each_batch_runs_on_the_snapshot_set_serving_when_it_starts(
    model_dir: Path, runtime: EnsembleRuntime
) -> None:
    """A hot reload swaps the set: the next batch runs on the new one."""
    metrics = Metrics()
    newer = EnsembleRuntime.load(model_dir, 2, RuntimeSettings(providers="cpu"))
    serving = [runtime]
    x = pixels(3)

    async def scenario() -> tuple[EnsembleRuntime, EnsembleRuntime, BatchAnswer]:
        batcher = DynamicBatcher(NAME, lambda: serving[0], 64, 0.0, metrics)
        batcher.start()
        _, before = await batcher.submit(x)
        serving[0] = newer  # the swap
        answer, after = await batcher.submit(x)
        await batcher.close()
        return before, after, answer

    before, after, answer = run(scenario)
    assert before is runtime and after is newer
    assert answer.prediction.member_probs.shape == (2, 3, CLASSES)
    assert_own_rows(newer, x, answer)


def test_a_request_decoded_for_a_replaced_input_gets_409_and_its_batch_runs(
    runtime: EnsembleRuntime,
) -> None:
    """A reload may swap in a set with another input shape while requests decoded for the
    old one wait: those get a 409 naming both shapes, and the others in the batch their
    answers (before, the whole batch failed inside onnxruntime, a 500)."""
    metrics = Metrics()
    good, stale = pixels(2), np.zeros((1, 3, 4, 4), np.float32)

    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(NAME, lambda: runtime, 64, 0.05, metrics)
        batcher.start()
        answers = await asyncio.gather(
            batcher.submit(good), batcher.submit(stale), return_exceptions=True
        )
        await batcher.close()
        return answers

    (answer, _), refused = run(scenario)
    assert isinstance(refused, Conflict) and refused.status == 409
    assert "now takes [N, 1, 8, 8], not [N, 3, 4, 4]" in refused.message
    assert_own_rows(runtime, good, answer)


class Recording:
    """The runtime, recording for each batch whether it ran on the sessions for a batch
    alone on the machine."""

    def __init__(self, runtime: EnsembleRuntime, watch: Callable[[], Any]) -> None:
        self.runtime = runtime
        self.alone: list[bool] = []
        self.watch = watch
        self.seen: list[Any] = []  # what `watch` gave while each batch ran

    def answer(
        self, x: np.ndarray, batch_size: int | None, members: int | None, alone: bool
    ) -> BatchAnswer:
        self.alone.append(alone)
        self.seen.append(self.watch())
        return self.runtime.answer(x, batch_size, members, alone)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)


def test_a_batch_runs_on_every_core_only_while_no_other_process_serves_clients(
    runtime: EnsembleRuntime,
) -> None:
    """Process 0 of two (server.board): alone while process 1 has been quiet, not while
    a batch of process 1 runs or ended a moment ago; its own batches mark it busy."""
    ended, loaded = [-math.inf, -math.inf], [1, 1]
    board = ProcessBoard(ended, loaded, 0)
    recording = Recording(runtime, lambda: ended[0])

    async def scenario() -> None:
        batcher = DynamicBatcher(
            NAME, lambda: cast(EnsembleRuntime, recording), 64, 0.0, Metrics(), board=board
        )
        batcher.start()
        await batcher.submit(pixels(1))  # process 1 quiet
        ended[1] = math.inf  # process 1 runs a batch
        await batcher.submit(pixels(1))
        ended[1] = time.monotonic()  # ... which just ended: its clients come back
        await batcher.submit(pixels(1))
        ended[1] = time.monotonic() - 1.0  # quiet for a second
        await batcher.submit(pixels(1))
        await batcher.close()

    run(scenario)
    assert recording.alone == [True, False, False, True]
    assert recording.seen == [math.inf] * 4  # process 0 is busy while its batches run
    assert time.monotonic() - 10 < ended[0] < time.monotonic()  # when its last batch ended
    assert board.idle()
