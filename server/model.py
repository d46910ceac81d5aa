"""One served model: its current snapshot set, the batcher in front of it, and its
(re)loading. A new set is loaded and checked off the event loop, then swapped in with
one assignment, so readiness never drops and requests in flight finish on the old set.
A set that fails its checks is never swapped in; the old one keeps serving."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from server.batching import DynamicBatcher
from server.board import ProcessBoard
from server.errors import BadRequest, Conflict, NotReady
from server.metrics import Metrics
from server.runtime import EnsembleRuntime, Float32Array, RuntimeLoadError
from server.settings import ServerSettings
from snapens.ensemble import EnsembleResult, combine
from snapens.manifest import MANIFEST_FILE, SNAPSHOT_DIR, InputSpec, ManifestError, utc_now

log = logging.getLogger("snapens.model")


def manifest_stamp(model_dir: Path) -> tuple[int, int] | None:
    """What changes when the trainer rewrites the manifest (it is replaced atomically)."""
    try:
        stat = (model_dir / MANIFEST_FILE).stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_ino


def files_stamp(model_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """The snapshot files as they are: what changes when someone repairs a set that failed
    to load (a file put back) without the manifest being rewritten."""
    try:
        entries = sorted(os.scandir(model_dir / SNAPSHOT_DIR), key=lambda e: e.name)
        return tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
    except OSError:
        return ()


class LoadState(BaseModel):
    """The outcome of a model's last load, as clients see it: paths in `error` are relative
    to the repository, never the server's filesystem."""

    status: Literal["pending", "loaded", "failed"] = "pending"
    at: str | None = None
    error: str | None = None
    snapshots: list[int] | None = None


@dataclass(frozen=True)
class Answer:
    """The ensemble's answer to one request, with what a protocol needs to encode it."""

    result: EnsembleResult
    classes: list[str]  # class names of the snapshot set that answered, in output order
    members: list[int]  # cycles of the members used
    member_probs: Float32Array  # [m, N, K] of those members


class ServedModel:
    def __init__(
        self,
        name: str,
        model_dir: Path,
        settings: ServerSettings,
        alone: ServerSettings | None,
        metrics: Metrics,
        board: ProcessBoard | None = None,
    ) -> None:
        self.name = name
        self.model_dir = model_dir
        self.settings = settings
        self.alone = alone  # the sessions' settings for a batch alone on the machine (board.py)
        self.metrics = metrics
        self._mutual_information = metrics.mutual_information.labels(name)
        self.runtime: EnsembleRuntime | None = None
        # The manifest's stamp at the last load; after a failed one, the files' too.
        self.stamp: object = None
        self.last_load = LoadState()
        self._lock = asyncio.Lock()
        self.batcher = DynamicBatcher(
            name,
            self.current,
            settings.max_batch_size,
            settings.max_queue_delay_ms / 1000,
            metrics,
            settings.batch_workers,
            board,
        )

    @property
    def ready(self) -> bool:
        return self.runtime is not None

    def current(self) -> EnsembleRuntime:
        """The snapshot set serving now; NotReady (503) before one has loaded."""
        if self.runtime is None:
            raise NotReady(f"model {self.name!r} is not ready")
        return self.runtime

    def input_spec(self) -> InputSpec:
        """What the serving set takes as input; NotReady (503) before one has loaded."""
        return self.current().manifest.input

    async def load(self) -> bool:
        """Load the manifest's current last-m set and swap it in; False (and the old set
        kept) if it fails its checks."""
        async with self._lock:
            stamp = manifest_stamp(self.model_dir)
            files = files_stamp(self.model_dir)
            try:
                runtime = await asyncio.to_thread(
                    EnsembleRuntime.load,
                    self.model_dir,
                    self.settings.m,
                    self.settings,
                    True,
                    self.alone,
                )
            except (ManifestError, RuntimeLoadError) as exc:
                return self._failed((stamp, files), str(exc))
            except Exception as exc:  # a case no check names: still one model's failed load
                log.exception("unexpected error loading %s", self.name)
                return self._failed(
                    (stamp, files), f"unexpected error: {type(exc).__name__}: {exc}"
                )
            self.runtime, self.stamp = runtime, stamp  # the swap
            self.last_load = LoadState(
                status="loaded", at=utc_now(), snapshots=[e.cycle for e in runtime.served]
            )
            self.metrics.reloads.labels(self.name, "loaded").inc()
            self.metrics.snapshots.labels(self.name).set(runtime.m)
            return True

    def _failed(self, stamp: object, message: str) -> bool:
        """Record a failed load; the set serving before, if any, keeps serving. Polling
        tries again once the manifest or a snapshot file changes, not on every poll: a
        repaired set loads in every server process, not only in the one a load request
        reached."""
        self.stamp = stamp
        error = self._relative(message)
        self.last_load = LoadState(status="failed", at=utc_now(), error=error)
        self.metrics.reloads.labels(self.name, "failed").inc()
        kept = "keeps serving the previous set" if self.runtime else "is not ready"
        log.error("loading %s failed, %s: %s", self.name, kept, error)
        return False

    def _relative(self, message: str) -> str:
        """`message` with the repository's own path taken off the paths it names."""
        for root in dict.fromkeys([self.model_dir.parent, self.model_dir.parent.resolve()]):
            message = message.replace(f"{root}{os.sep}", "")
        return message

    def changed_on_disk(self) -> bool:
        if self.last_load.status == "failed":
            return (manifest_stamp(self.model_dir), files_stamp(self.model_dir)) != self.stamp
        return manifest_stamp(self.model_dir) != self.stamp

    async def predict(self, x: Float32Array, m: int | None) -> Answer:
        """The ensemble's answer for x [n, C, H, W], from the last m loaded snapshots (m None:
        the served default, the manifest's default_m unless --m is set)."""
        runtime = self.current()
        if m is not None and not 1 <= m <= runtime.m:
            raise BadRequest(f"m must be between 1 and {runtime.m} (the snapshots loaded), got {m}")
        answer, used = await self.batcher.submit(x, m)
        if m is not None and m > used.m:
            raise Conflict(
                f"the model was reloaded while the request waited and now has {used.m} "
                f"snapshots loaded, fewer than m={m}; send it again with m at most {used.m}"
            )
        take = min(m or used.default_m, used.m)
        members = answer.prediction.member_probs[-take:]
        # The batch combined the served members; another m needs its own figures.
        if take == used.default_m:
            result = answer.result
        else:
            result = combine(members, trained=answer.prediction.trained_probs[-take:])
        for value in result.mutual_information:
            self._mutual_information.observe(float(value))
        cycles = [e.cycle for e in used.members[-take:]]
        return Answer(result, used.manifest.classes, cycles, members)

    def describe(self) -> dict[str, Any]:
        """What the metadata endpoints report about the served set."""
        runtime = self.runtime
        info: dict[str, Any] = {
            "ready": self.ready,
            "last_load": self.last_load.model_dump(exclude_none=True),
        }
        if runtime is not None:
            info |= {
                "m": runtime.default_m,
                # Requests may ask for any m up to the snapshots loaded.
                "loaded_snapshots": [e.cycle for e in runtime.members],
                "snapshots": [
                    {
                        "cycle": e.cycle,
                        "epoch": e.epoch,
                        "val_accuracy": e.val_accuracy,
                        "sha256": e.sha256,
                    }
                    for e in runtime.served
                ],
                "execution": runtime.execution,
                "providers": runtime.providers,
                "warnings": runtime.warnings,
                "training_state": runtime.manifest.state,
            }
        return info
