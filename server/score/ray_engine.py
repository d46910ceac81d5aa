"""The Ray engine: the same scoring on Ray Data, for inputs too large for one machine.

    paths or row ids ──▶ map_batches(Scorer actors: one ensemble runtime each,
                                     num_gpus=1 per actor where the cluster has GPUs)
                     ──▶ sort by id/path ──▶ write_parquet ──▶ the output file

Parquet and CSV inputs are read with read_parquet/read_csv. Images are decoded inside
the actors with the server's own preprocessing (not Ray's read_images, which would be a
second implementation of it), so both engines give the same rows.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from server.runtime import EnsembleRuntime
from server.score.records import answer_table
from server.score.sources import ArraySource, Chunk, ImageSource, open_source, valid_rows
from server.settings import RuntimeSettings


class Scorer:
    """A Ray actor: one ensemble runtime, scoring batches of ids or paths."""

    def __init__(
        self,
        model_dir: str,
        m: int | None,
        settings: dict[str, Any],
        input_path: str,
        column: str,
        members: bool,
        batch_size: int,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        runtime_settings = RuntimeSettings(**settings)
        self.runtime = EnsembleRuntime.load(Path(model_dir), m, runtime_settings)
        spec = self.runtime.manifest.input
        path = Path(input_path)
        self.source = open_source(path, spec, column, runtime_settings.max_image_pixels)
        self.array = np.load(path, mmap_mode="r") if isinstance(self.source, ArraySource) else None
        self.members = members
        self.batch_size = batch_size
        self.pool = ThreadPoolExecutor(max_workers=2)

    def __call__(self, batch: pa.Table) -> pa.Table:
        key_name = self.source.key_name
        keys = batch.column(key_name).to_pylist()
        if self.array is not None:
            rows = np.asarray(self.array[keys]).reshape(
                len(keys), *self.runtime.manifest.input.shape[1:]
            )
            decoded = valid_rows(rows, self.runtime.manifest.input)
        else:
            decoded = self.source.decode(Chunk(0, keys, keys), self.pool)
        answer = self.runtime.answer(decoded.x, self.batch_size) if len(decoded.x) else None
        return answer_table(
            key_name,
            keys,
            answer,
            decoded.ok,
            decoded.errors,
            self.runtime.manifest.classes,
            self.members,
        )


def keys_dataset(source: ArraySource | ImageSource, column: str) -> Any:
    """A dataset of what identifies each input: row ids, or image paths."""
    import ray.data

    if isinstance(source, ArraySource):
        return ray.data.range(source.total)  # a column "id"
    if source.names is not None:
        return ray.data.from_arrow(pa.table({"path": source.names}))
    if source.origin.suffix == ".parquet":
        table = ray.data.read_parquet(str(source.origin), columns=[column])
    else:
        table = ray.data.read_csv(str(source.origin)).select_columns([column])
    return table.rename_columns({column: "path"})


def actor_threads(asked: int, cpus: float, actors: int) -> int:
    """onnxruntime intra-op threads per actor: as asked, or (0) the cluster's cores shared
    among the actors. Left at 0 each actor's session would take every core of its machine,
    and several actors per machine would run several times more threads than cores,
    spinning against each other (as Ray sets OMP_NUM_THREADS for the same reason)."""
    return asked or max(1, int(cpus) // actors)


def score_ray(
    source: ArraySource | ImageSource,
    model_dir: Path,
    m: int | None,
    settings: RuntimeSettings,
    column: str,
    members: bool,
    batch_size: int,
    actors: int | None,
    address: str | None,
    out_dir: Path,
    quiet: bool,
) -> None:
    """Write the scored rows as Parquet files into out_dir, in id/path order."""
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not quiet and sys.stderr.isatty()
    if quiet:
        logging.getLogger("ray.data").setLevel(logging.WARNING)

    ray.init(
        address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True
    )
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    cpus = resources.get("CPU", 1.0)
    count = actors or max(1, int(gpus) if gpus else int(cpus) // 2)
    # Leave one CPU to the read, sort and write tasks: actors holding every CPU would
    # starve them and the pipeline would never start.
    actor_cpus = max(0.25, min(1.0, (cpus - 1) / count))
    actor_settings = settings.model_copy(
        update={"intra_op_threads": actor_threads(settings.intra_op_threads, cpus, count)}
    )
    dataset = keys_dataset(source, column)
    scored = dataset.map_batches(
        Scorer,
        fn_constructor_kwargs={
            "model_dir": str(model_dir),
            "m": m,
            "settings": actor_settings.model_dump(mode="json"),
            "input_path": str(source.path if isinstance(source, ArraySource) else source.origin),
            "column": column,
            "members": members,
            "batch_size": batch_size,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        concurrency=count,
        num_cpus=actor_cpus,
        num_gpus=1 if gpus else 0,
    )
    scored.sort(source.key_name).write_parquet(str(out_dir))
