"""The local engine: a producer thread reads and decodes chunk k+1 (images on a thread
pool; Pillow and onnxruntime both release the GIL) while the main thread scores chunk k
and writes its part. A bounded queue keeps at most a few chunks in memory."""

from __future__ import annotations

import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from server.runtime import EnsembleRuntime
from server.score.output import Output
from server.score.records import answer_table
from server.score.sources import ArraySource, Chunk, Decoded, ImageSource
from snapens.console import console

_DONE = object()


@dataclass(frozen=True)
class Options:
    batch_size: int
    chunk_rows: int
    members: bool
    decode_workers: int
    quiet: bool


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} rows/s" if task.speed else "– rows/s")


def progress_bar(quiet: bool) -> Progress:
    """A progress bar with rows/s and ETA; silent when not on a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RowsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        disable=quiet or not sys.stderr.isatty(),
    )


def score_local(
    source: ArraySource | ImageSource,
    runtime: EnsembleRuntime,
    output: Output,
    options: Options,
    done: set[int],
) -> None:
    """Score every chunk not in `done`, writing one part per chunk."""
    classes = runtime.manifest.classes
    pool = ThreadPoolExecutor(max_workers=options.decode_workers, thread_name_prefix="decode")
    ready: queue.Queue[object] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in source.chunks(options.chunk_rows, done):
                item = (chunk, source.decode(chunk, pool))
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_DONE)
        except BaseException as exc:  # handed to the main thread
            ready.put(exc)

    producer = threading.Thread(target=produce, name="read-decode", daemon=True)
    producer.start()
    already = sum(pq.ParquetFile(p).metadata.num_rows for p in output.parts())
    try:
        with progress_bar(options.quiet) as progress:
            task = progress.add_task("scoring", total=source.total, completed=already)
            while (item := ready.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                chunk, decoded = cast(tuple[Chunk, Decoded], item)
                output.write_part(
                    chunk.index,
                    score_chunk(runtime, chunk, decoded, source.key_name, classes, options),
                )
                progress.advance(task, len(chunk.keys))
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


def score_chunk(
    runtime: EnsembleRuntime,
    chunk: Chunk,
    decoded: Decoded,
    key_name: str,
    classes: list[str],
    options: Options,
) -> pa.Table:
    answer = runtime.answer(decoded.x, options.batch_size) if len(decoded.x) else None
    return answer_table(
        key_name, chunk.keys, answer, decoded.ok, decoded.errors, classes, options.members
    )
