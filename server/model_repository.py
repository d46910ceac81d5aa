"""The served repository: every model folder under the repository path, loaded at start,
and kept current while trainers write new snapshots (manifest polling or an explicit
load request)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from server import heap
from server.board import ProcessBoard
from server.errors import NotFound
from server.metrics import Metrics
from server.model import ServedModel
from server.runtime import intra_op_spinning, process_share
from server.settings import ServerSettings
from snapens.manifest import MANIFEST_FILE

log = logging.getLogger("snapens.repository")


class ModelRepository:
    def __init__(
        self, settings: ServerSettings, metrics: Metrics, board: ProcessBoard | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.board = board or ProcessBoard.single()
        self.root = Path(settings.repository)
        self.models: dict[str, ServedModel] = {}
        self.started = False
        self._poller: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Ready once the first scan has loaded, and at least one model can answer (with
        several server processes, once no process takes connections before its first
        scan has loaded: server.board)."""
        return (
            self.started
            and any(model.ready for model in self.models.values())
            and self.board.none_loading()
        )

    def folders(self) -> dict[str, Path]:
        if not self.root.is_dir():
            return {}
        return {
            p.name: p
            for p in sorted(self.root.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()
        }

    async def start(self) -> None:
        try:
            await self.refresh()
        except Exception:  # the folder cannot be listed, say: the poller tries again
            log.exception("loading the repository failed")
        heap.freeze_long_lived()
        self.started = True
        self.board.loaded()
        if self.settings.poll_interval_s > 0:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(), name="manifest-poller"
            )
        log.info(
            "serving %d model(s) from %s: %s",
            len(self.models),
            self.root,
            ", ".join(
                f"{n} ({'ready' if m.ready else 'not ready'})" for n, m in self.models.items()
            ),
        )

    def model_settings(self, models: int) -> tuple[ServerSettings, ServerSettings | None]:
        """The settings a model's snapshot set loads with, where `models` are served, with
        --intra-op-spinning auto resolved for that count; with several server processes,
        those of its sessions under load (the process's share of the cores) and those of
        its sessions for a batch alone on the machine (server.board), else None. A model
        loaded before the count changed keeps its sessions until its next load."""

        def resolved(processes: int) -> ServerSettings:
            spinning = intra_op_spinning(self.settings, models, processes)
            return self.settings.model_copy(update={"intra_op_spinning": spinning})

        workers = self.settings.workers
        if workers == 1:
            return resolved(1), None
        return process_share(resolved(workers), workers), resolved(1)

    async def refresh(self) -> None:
        """Add new model folders, reload those whose manifest changed, and unload those
        whose folder or manifest is gone (as Triton's repository polling does). Where the
        repository itself cannot be seen (a volume briefly away), nothing is unloaded."""
        folders = self.folders()
        if self.root.is_dir():
            for name in [name for name in self.models if name not in folders]:
                await self._unload(name)
        settings = self.model_settings(len(folders))
        for served in self.models.values():
            served.settings, served.alone = settings
        for name, folder in folders.items():
            try:
                model = self.models.get(name)
                if model is None:
                    model = self._add(name, folder, settings)
                    await model.load()
                elif model.changed_on_disk():
                    log.info("%s changed on disk: loading its snapshot set", name)
                    await model.load()
            except Exception:  # one folder's fault must not keep the others from loading
                log.exception("refreshing model %s failed", name)

    async def load(self, name: str) -> ServedModel:
        """Explicit (re)load of one model, as the repository extension's load request."""
        folders = self.folders()
        settings = self.model_settings(len(folders))
        model = self.models.get(name)
        if model is None:
            folder = folders.get(name)
            if folder is None:
                raise NotFound(f"no model folder {name!r} with a manifest in the repository")
            model = self._add(name, folder, settings)
        model.settings, model.alone = settings
        await model.load()
        return model

    def get(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"unknown model {name!r} (models: {known})")
        return model

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await asyncio.gather(*(model.batcher.close() for model in self.models.values()))

    async def _unload(self, name: str) -> None:
        """Stop serving `name`: new requests get 404, those already queued their answers."""
        model = self.models.pop(name)
        log.info("model folder %s is gone from the repository: unloaded", name)
        if self.metrics.multiprocess:  # its files keep every series: 0 says it is gone
            self.metrics.snapshots.labels(name).set(0)
        else:
            with contextlib.suppress(KeyError):  # a model that never loaded has no series
                self.metrics.snapshots.remove(name)
        await model.batcher.close()

    def _add(
        self, name: str, folder: Path, settings: tuple[ServerSettings, ServerSettings | None]
    ) -> ServedModel:
        model = ServedModel(name, folder, *settings, self.metrics, self.board)
        model.batcher.start()
        self.models[name] = model
        return model

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.refresh()
            except Exception:  # never let a bad folder stop the poller
                log.exception("polling the repository failed")
