"""The training loop: SGD over in-memory tensors, the rate of every step set from the
schedule (`lr_at(step)`), and a snapshot at the end of every cycle, exported and verified
on the spot.

Snapshots run on the training thread on purpose: a second thread running torch ops
beside training makes two OpenMP teams compete for the cores, which cost far more
(about 20% of a CPU run, measured) than the export itself."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from snapens.console import console
from snapens.folder import ModelFolder, SnapshotMeta
from snapens.manifest import Manifest
from trainer import setup
from trainer.augment import random_crop_flip
from trainer.checkpoint import (
    check_resume_config,
    check_resume_data,
    check_resume_position,
    load_checkpoint,
    save_checkpoint,
)
from trainer.choices import Augment
from trainer.config import TrainConfig
from trainer.data import (
    Dataset,
    data_identity,
    epoch_batches,
    iterations_per_epoch,
    load_dataset,
)
from trainer.errors import UserError
from trainer.evaluate import Evaluation, evaluate
from trainer.export import ExportError, SnapshotExporter, verify_onnx
from trainer.finish import check_swa_target, finish_run
from trainer.history import History
from trainer.manifest_builder import build_manifest
from trainer.nets import Normalized
from trainer.rates import LRSchedule
from trainer.runtime import Runtime, stop_requests
from trainer.schedules import Plan, build_schedule, make_plan
from trainer.swa import SnapshotAverage

CROP_PADDING = 4


class DivergedError(UserError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainResult:
    folder: ModelFolder
    manifest: Manifest
    report: dict[str, Any]
    train_seconds: float


def progress_bar(out: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lr {task.fields[lr]:.4g}  loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=out,
        disable=not enabled,
    )


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        rt: Runtime,
        data: Dataset,
        folder: ModelFolder,
        resume_state: dict[str, Any] | None,
    ) -> None:
        self.cfg, self.rt, self.data, self.folder = cfg, rt, data, folder
        split = setup.split_on_device(cfg, data, rt.device)
        self.train_x, self.train_y = split.train_x, split.train_y
        self.val_x, self.val_y = split.val_x, split.val_y
        self.verify_batch = split.verify_batch
        self.arch = setup.resolve_arch(cfg, data)
        self.augment = setup.resolve_augment(cfg, data)
        self.mean, self.std = setup.normalisation(self.train_x)

        torch.manual_seed(cfg.seed)
        self.model = setup.new_model(self.arch, data, self.mean, self.std).to(rt.device)
        self.memory_format = setup.memory_format(self.arch)
        self.model.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # stub lacks it
        self.ddp = setup.distributed(self.model, rt)
        self.optimizer = setup.build_optimizer(cfg, self.model)
        self.scaler = setup.grad_scaler(rt)
        ipe = iterations_per_epoch(len(self.train_x), cfg.batch_size, rt.world_size)
        self.plan: Plan = make_plan(cfg, ipe)
        self.schedule: LRSchedule = build_schedule(cfg, self.plan, len(data.classes))
        self.cycle_at = {step: i + 1 for i, step in enumerate(self.plan.snapshot_steps)}
        self.data_identity = data_identity(data)
        self.history = History()
        # The snapshot copy and its traced graph: made by the first export, then reused.
        self.snapshotter: tuple[Normalized, SnapshotExporter] | None = None
        self.average = SnapshotAverage(self.model) if cfg.swa else None
        self.stop = threading.Event()
        self.epoch, self.step = 0, 0
        if resume_state is not None:
            path = folder.checkpoint_path
            check_resume_data(resume_state.get("data"), self.data_identity)
            check_resume_position(path, resume_state, self.plan)
            self._restore(resume_state)

        self.console = console(stderr=True, quiet=cfg.quiet or not rt.is_main)

    # Construction helpers ------------------------------------------------------------

    def check_export(self) -> None:
        """Trace the network's ONNX graph, and export and verify the untrained network, once
        before training: a network that cannot be exported fails now rather than after its
        first cycle, and the exporter's start-up (~0.2 s) and tracing are paid before the loop."""
        if not self.cfg.snapshots:
            return
        try:
            model, onnx_bytes = self._export_current()
            verify_onnx(onnx_bytes, model, self.verify_batch)
        except ExportError as exc:
            raise UserError(f"--arch {self.arch}: {exc}") from None

    def fresh_copy(self) -> Normalized:
        """A float32 CPU network of this run's architecture, made without touching the
        training's random stream."""
        with torch.random.fork_rng(devices=[]):
            return setup.new_model(self.arch, self.data, self.mean, self.std).eval()

    def _export_current(self) -> tuple[Normalized, bytes]:
        """The current weights as a float32 CPU copy in eval mode (what the export is verified
        against) and as ONNX bytes. The copy and the traced graph are made once, then reused."""
        if self.snapshotter is None:
            model = self.fresh_copy()
            self.snapshotter = (model, SnapshotExporter(model, self.data.input_shape))
        model, exporter = self.snapshotter
        model.load_state_dict(self.model.state_dict())
        return model, exporter.export(model)

    def initial_manifest(self) -> Manifest:
        return build_manifest(
            self.cfg,
            self.data,
            self.plan,
            self.rt,
            arch=self.arch,
            augment=str(self.augment),
            parameters=sum(p.numel() for p in self.model.parameters()),
            train_examples=len(self.train_x),
            val_examples=len(self.val_x),
        )

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state(state["schedule"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.rt.device.type == "cuda" and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = History.from_state(state["history"])
        if self.average is not None:
            self.average.load_state(state["swa"])

    # The loop ------------------------------------------------------------------------

    def fit(self) -> float:
        """Train to the end of the budget; returns the wall time of all its epochs in seconds
        (those of earlier sittings included when resumed)."""
        cfg, plan = self.cfg, self.plan
        shown = not cfg.quiet and self.rt.is_main and sys.stderr.isatty()
        with progress_bar(self.console, shown) as progress, stop_requests() as self.stop:
            task = progress.add_task(
                "training",
                total=plan.total_iterations,
                completed=self.step,
                lr=cfg.lr,
                loss=float("nan"),
            )
            while self.epoch < plan.epochs:
                began = time.perf_counter()
                train_loss = self._train_epoch(progress, task)
                self._end_epoch(train_loss, began)
        return self.history.train_seconds

    def _inputs(self, idx: torch.Tensor, augment_rng: torch.Generator) -> torch.Tensor:
        """Training images `idx` as the network trains on them (augmented, its layout)."""
        x = self.train_x[idx].float()
        if self.augment is Augment.CROP_FLIP:
            x = random_crop_flip(x, CROP_PADDING, augment_rng)
        return x.contiguous(memory_format=self.memory_format)

    def training_pass(self) -> Iterator[torch.Tensor]:
        """One pass over the training split, augmented as in training (fixed seed): what the
        SWA model's batch-norm statistics are recomputed on (see trainer.swa)."""
        augment_rng = torch.Generator().manual_seed(self.cfg.seed * 7919 + 1)
        n, size = len(self.train_x), self.cfg.batch_size
        for start in range(0, n, size):
            idx = torch.arange(start, min(start + size, n), device=self.train_x.device)
            yield self._inputs(idx, augment_rng)

    def _train_epoch(self, progress: Progress, task: TaskID) -> float:
        cfg, rt = self.cfg, self.rt
        self.schedule.begin_epoch(self.epoch, self.model, self.train_x)
        augment_rng = torch.Generator().manual_seed(cfg.seed * 7919 + self.epoch * 104729 + rt.rank)
        loss_sum = torch.zeros((), device=rt.device)
        end_step = (self.epoch + 1) * self.plan.iterations_per_epoch
        batches = epoch_batches(
            len(self.train_x), cfg.batch_size, cfg.seed, self.epoch, rt.rank, rt.world_size
        )
        for batch in batches:
            idx = batch.to(rt.device)
            x, y = self._inputs(idx, augment_rng), self.train_y[idx]
            with torch.autocast(
                rt.device.type,
                dtype=rt.amp_dtype or torch.bfloat16,
                enabled=rt.amp_dtype is not None,
            ):
                logits = self.ddp(x)
            loss = F.cross_entropy(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            lr = self.schedule.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            self.step += 1
            if self.stop.is_set():
                raise KeyboardInterrupt  # resume restarts from the last epoch's checkpoint
            loss_sum += loss.detach()
            if self.step % 50 == 0:
                progress.update(task, loss=float(loss.detach()))
            progress.update(task, advance=1, lr=lr)
            cycle = self.cycle_at.get(self.step)
            if cycle is not None and self.step != end_step:
                if not torch.isfinite(loss_sum):  # never export a diverged network
                    raise DivergedError(self.schedule.diverged(self.epoch + 1, float(loss_sum)))
                self._snapshot(cycle, self._evaluate())
        train_loss = float(loss_sum) / self.plan.iterations_per_epoch
        if not torch.isfinite(torch.tensor(train_loss)):
            raise DivergedError(self.schedule.diverged(self.epoch + 1, train_loss))
        return train_loss

    def _evaluate(self) -> Evaluation | None:
        if not self.rt.is_main:
            return None
        return evaluate(
            self.model, self.val_x, self.val_y, self.cfg.eval_batch_size, self.rt.amp_dtype
        )

    def _end_epoch(self, train_loss: float, began: float) -> None:
        cycle = self.cycle_at.get(self.step)
        evaluation: Evaluation | None = None
        val_loss: float | None = None
        if self._validation_due(cycle):  # the same answer on every rank
            evaluation = self._evaluate()
            val_loss = self.rt.broadcast_float(None if evaluation is None else evaluation.loss)
        if cycle is not None:
            self._snapshot(cycle, evaluation)
        self.schedule.end_epoch(self.step, val_loss)
        self.epoch += 1
        seconds = time.perf_counter() - began
        self.history.train_seconds += seconds
        if evaluation is not None:
            last_lr = self.schedule.lr_at(self.step - 1)
            error = 1 - evaluation.accuracy
            self.history.record_epoch(
                self.epoch, train_loss, error, evaluation.loss, last_lr, seconds
            )
        self._checkpoint()

    def _validation_due(self, cycle: int | None) -> bool:
        """Every `eval_every` epochs, at a snapshot, and after the last epoch."""
        done = self.epoch + 1
        return cycle is not None or done % self.cfg.eval_every == 0 or done == self.plan.epochs

    # Snapshots and checkpoints -------------------------------------------------------

    def _snapshot(self, cycle: int, evaluation: Evaluation | None) -> None:
        """Export the current weights, verify the export and add it to the repository."""
        if evaluation is None or not self.cfg.snapshots:
            return
        began = time.perf_counter()
        self.history.snapshot_probs[cycle] = evaluation.probs
        meta = SnapshotMeta(
            cycle=cycle,
            epoch=round(self.step / self.plan.iterations_per_epoch, 4),
            step=self.step,
            lr=self.schedule.lr_at(self.step - 1),
            val_accuracy=evaluation.accuracy,
            val_nll=evaluation.loss,
        )
        model, onnx_bytes = self._export_current()
        diff = verify_onnx(onnx_bytes, model, self.verify_batch)
        self.folder.add_snapshot(onnx_bytes, meta, diff)
        if self.average is not None:
            self.average.add(self.model)
        self.history.snapshot_seconds += time.perf_counter() - began
        self.console.print(
            f"snapshot {meta.cycle}/{self.plan.cycles} at epoch {meta.epoch:g} (step {meta.step}, "
            f"lr {meta.lr:.3g}): val error {1 - meta.val_accuracy:.4f}, NLL {meta.val_nll:.4f}, "
            f"ONNX max |Δp| {diff:.1e}"
        )

    def _checkpoint(self) -> None:
        """The step and the schedule's plain state fix every rate a resumed run uses."""
        if not self.rt.is_main:
            return
        state = {
            "config": self.cfg.fingerprint(),
            "data": self.data_identity,
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.rt.device.type == "cuda" else [],
            },
            "history": self.history.state(),
            "swa": self.average.state() if self.average is not None else None,
        }
        save_checkpoint(self.folder.checkpoint_path, state)


def train(cfg: TrainConfig, rt: Runtime) -> TrainResult | None:
    """Run one training job end to end; rank 0 returns the finished model folder."""
    folder = ModelFolder(cfg.repository, cfg.model_name)
    if rt.is_main:
        folder.check_target(cfg.overwrite, cfg.resume)
        check_swa_target(cfg, folder)
    resume_state = load_checkpoint(folder.checkpoint_path) if cfg.resume else None
    if resume_state is not None:
        check_resume_config(cfg, resume_state["config"])

    data = load_dataset(cfg.dataset, cfg.data, cfg.image_size, cfg.cache_dir)
    trainer = Trainer(cfg, rt, data, folder, resume_state)  # validates the plan before any write
    if rt.is_main:
        trainer.check_export()
        if resume_state is None:
            folder.create(trainer.initial_manifest())
        else:
            folder.reopen(trainer.step)
    rt.barrier()
    seconds = trainer.fit()
    rt.barrier()
    if not rt.is_main:
        return None
    manifest, report = finish_run(trainer, seconds)
    return TrainResult(folder, manifest, report, seconds)
