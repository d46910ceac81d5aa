"""Learning-rate schedules and the snapshot plan.

A `Plan` is plain data fixed before training: the budget in iterations and the
optimizer steps after which snapshots are taken. The learning rate itself is driven
by torch's schedulers where they fit, stepped every iteration:

- sgdr:      CosineAnnealingWarmRestarts(T_0 = t0 epochs, T_mult), Loshchilov & Hutter
             η = η_min + ½(η_max − η_min)(1 + cos(π·T_cur/T_i)), T_i = T_0·T_mult^i
- snapshot:  Huang et al.'s α(t) = α0/2·(cos(π·mod(t−1, ⌈T/M⌉)/⌈T/M⌉) + 1), which is
             CosineAnnealingWarmRestarts with T_0 = ⌈T/M⌉ iterations, T_mult = 1, η_min = 0
- step:      MultiStepLR, ×0.1 at 50% and 75% of the budget
- plateau:   ReduceLROnPlateau on the validation loss, once per epoch
- lipschitz: Yedida & Saha's lr = 1/K, K = (k−1)·K_z/(k·m) (+1e-4·max‖W‖ with weight
             decay), K_z the largest Frobenius norm of a batch's penultimate activations,
             recomputed at the start of every epoch
An optional linear warmup (LinearLR) precedes the cycles; the cycles share the rest
of the budget. Snapshots of the non-cyclic schedules are taken at evenly spaced
epochs (the paper's NoCycle baseline).

Resuming restores each scheduler from its state_dict (never by rebuilding it from
last_epoch, which is wrong for CosineAnnealingWarmRestarts with T_mult > 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingWarmRestarts,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    ReduceLROnPlateau,
    SequentialLR,
)

from trainer.config import TrainConfig
from trainer.errors import UserError


@dataclass(frozen=True)
class Plan:
    """When the run ends and when it takes its snapshots, in optimizer steps."""

    schedule: str
    iterations_per_epoch: int
    epochs: int
    warmup_iterations: int
    snapshot_steps: tuple[int, ...]  # steps completed at each snapshot, increasing
    t0_epochs: int | None = None  # sgdr
    cycle_iterations: int | None = None  # snapshot: ⌈T/M⌉

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    @property
    def cycles(self) -> int:
        return len(self.snapshot_steps)

    def describe(self) -> dict[str, Any]:
        return {
            "iterations_per_epoch": self.iterations_per_epoch,
            "epochs": self.epochs,
            "iterations": self.total_iterations,
            "warmup_iterations": self.warmup_iterations,
            "snapshot_steps": list(self.snapshot_steps),
            "t0_epochs": self.t0_epochs,
            "cycle_iterations": self.cycle_iterations,
        }


def _sgdr_periods(cfg: TrainConfig, available_epochs: int) -> tuple[int, list[int]]:
    """(T_0 in epochs, restart-period ends in epochs after warmup)."""
    mult = int(cfg.t_mult)
    if cfg.t0 is None:
        m = cfg.num_snapshots
        total_units = sum(mult**i for i in range(m))
        if available_epochs % total_units:
            nearest = (
                total_units * max(1, round(available_epochs / total_units)) + cfg.warmup_epochs
            )
            raise UserError(
                f"--epochs {cfg.budget_epochs}: {m} SGDR periods with T_mult={mult} take "
                f"{total_units}·T0 epochs; use --epochs {nearest}, or give --t0"
            )
        t0 = available_epochs // total_units
    else:
        t0 = cfg.t0
    ends, end, i = [], 0, 0
    while end + t0 * mult**i <= available_epochs:
        end += t0 * mult**i
        ends.append(end)
        i += 1
    if not ends or ends[-1] != available_epochs:
        valid = [e + cfg.warmup_epochs for e in ends] or [t0 + cfg.warmup_epochs]
        raise UserError(
            f"--epochs {cfg.budget_epochs} ends inside an SGDR restart period (--t0 {t0}, "
            f"--t-mult {mult}); periods end at epochs {valid}: use one of those"
        )
    if cfg.cycles is not None and cfg.cycles != len(ends):
        raise UserError(
            f"--cycles {cfg.cycles} disagrees with --t0 {t0} --t-mult {mult} over "
            f"{cfg.budget_epochs} epochs ({len(ends)} periods): drop one of them"
        )
    return t0, ends


def make_plan(cfg: TrainConfig, iterations_per_epoch: int) -> Plan:
    if iterations_per_epoch < 1:
        raise UserError(
            f"--batch-size {cfg.batch_size} is larger than the training split: "
            "no full batch per epoch"
        )
    epochs = cfg.budget_epochs
    if cfg.warmup_epochs >= epochs:
        raise UserError(
            f"--warmup-epochs {cfg.warmup_epochs} leaves no epochs of a {epochs}-epoch budget"
        )
    ipe = iterations_per_epoch
    warmup = cfg.warmup_epochs * ipe
    cycle_iters = epochs * ipe - warmup
    m = cfg.num_snapshots
    if m > cycle_iters:
        raise UserError(
            f"--cycles {m} is larger than the number of training iterations ({cycle_iters}): "
            "lower --cycles or raise --epochs"
        )

    if cfg.schedule == "sgdr":
        t0, ends = _sgdr_periods(cfg, epochs - cfg.warmup_epochs)
        steps = tuple(warmup + e * ipe for e in ends)
        return Plan(cfg.schedule, ipe, epochs, warmup, steps, t0_epochs=t0)
    if cfg.schedule == "snapshot":
        if cycle_iters % m:
            raise UserError(
                f"{cycle_iters} iterations do not split into {m} equal cycles, so the last "
                "snapshot would not sit at a learning-rate minimum: choose --epochs divisible "
                "by --cycles"
            )
        length = math.ceil(cycle_iters / m)
        steps = tuple(warmup + length * i for i in range(1, m + 1))
        return Plan(cfg.schedule, ipe, epochs, warmup, steps, cycle_iterations=length)

    # NoCycle: M snapshots at evenly spaced epochs of one run.
    span = epochs - cfg.warmup_epochs
    if m > span:
        raise UserError(
            f"--cycles {m}: a {cfg.schedule} run takes at most one snapshot per epoch ({span})"
        )
    ends = [cfg.warmup_epochs + (span * i) // m for i in range(1, m + 1)]
    return Plan(cfg.schedule, ipe, epochs, warmup, tuple(e * ipe for e in ends))


# Learning-rate controllers -------------------------------------------------------------


class LRSchedule:
    """Moves the optimizer's learning rate at the three points of the loop."""

    needs_validation_loss = False

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first iteration of each epoch."""

    def on_iteration_end(self) -> None:
        """Called after every optimizer step."""

    def on_epoch_end(self, val_loss: float | None) -> None:
        """Called after each epoch with the validation loss (None when not evaluated)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""


class PerIteration(LRSchedule):
    """A torch scheduler stepped after every optimizer step."""

    def __init__(self, scheduler: LRScheduler) -> None:
        self.scheduler = scheduler

    def on_iteration_end(self) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


class Plateau(LRSchedule):
    """ReduceLROnPlateau on the validation loss each epoch, after an optional warmup."""

    needs_validation_loss = True

    def __init__(self, optimizer: Optimizer, warmup_iterations: int, patience: int, factor: float):
        self.plateau = ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience)
        self.warmup = _warmup(optimizer, warmup_iterations) if warmup_iterations else None
        self.warmup_iterations = warmup_iterations
        self.iteration = 0

    def on_iteration_end(self) -> None:
        self.iteration += 1
        if self.warmup is not None and self.iteration <= self.warmup_iterations:
            self.warmup.step()

    def on_epoch_end(self, val_loss: float | None) -> None:
        if val_loss is None:
            raise RuntimeError("plateau needs the validation loss every epoch")
        if self.iteration >= self.warmup_iterations:
            self.plateau.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "plateau": self.plateau.state_dict(),
            "warmup": self.warmup.state_dict() if self.warmup is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        self.plateau.load_state_dict(state["plateau"])
        if self.warmup is not None:
            self.warmup.load_state_dict(state["warmup"])


def lipschitz_lr(
    max_activation_norm: float,
    classes: int,
    batch_size: int,
    max_weight_norm: float,
    weight_decay: float,
) -> float:
    """Yedida & Saha: lr = 1/K, K = (k−1)·K_z/(k·m), plus 1e-4·max‖W‖ when weight decay is on."""
    k = (classes - 1) * max_activation_norm / (classes * batch_size)
    if weight_decay > 0:
        k += 1e-4 * max_weight_norm
    if not k > 0:
        raise RuntimeError("the Lipschitz constant is zero: penultimate activations are all zero")
    return 1.0 / k


class Lipschitz(LRSchedule):
    """Sets lr = 1/K at the start of each epoch from a measurement of the network.

    `measure` returns (K_z, max‖W‖): the largest Frobenius norm of a training batch's
    penultimate activations, and the largest Frobenius norm of a weight tensor.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        measure: Callable[[], tuple[float, float]],
        classes: int,
        batch_size: int,
        weight_decay: float,
    ) -> None:
        self.optimizer = optimizer
        self.measure = measure
        self.classes = classes
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.history: list[dict[str, float]] = []

    def on_epoch_start(self, epoch: int) -> None:
        kz, max_w = self.measure()
        lr = lipschitz_lr(kz, self.classes, self.batch_size, max_w, self.weight_decay)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.history.append({"epoch": epoch, "kz": kz, "max_weight_norm": max_w, "lr": lr})

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])


def _warmup(optimizer: Optimizer, iterations: int) -> LinearLR:
    return LinearLR(
        optimizer, start_factor=1.0 / iterations, end_factor=1.0, total_iters=iterations
    )


def build_schedule(
    cfg: TrainConfig,
    plan: Plan,
    optimizer: Optimizer,
    classes: int,
    measure: Callable[[], tuple[float, float]],
) -> LRSchedule:
    cycle_iters = plan.total_iterations - plan.warmup_iterations
    main: LRScheduler
    if cfg.schedule == "plateau":
        return Plateau(optimizer, plan.warmup_iterations, cfg.plateau_patience, cfg.plateau_factor)
    if cfg.schedule == "lipschitz":
        return Lipschitz(optimizer, measure, classes, cfg.batch_size, cfg.weight_decay)
    if cfg.schedule == "sgdr":
        assert plan.t0_epochs is not None
        main = CosineAnnealingWarmRestarts(
            optimizer,
            T_0=plan.t0_epochs * plan.iterations_per_epoch,
            T_mult=int(cfg.t_mult),
            eta_min=cfg.lr_min,
        )
    elif cfg.schedule == "snapshot":
        assert plan.cycle_iterations is not None
        main = CosineAnnealingWarmRestarts(
            optimizer, T_0=plan.cycle_iterations, T_mult=1, eta_min=0.0
        )
    else:  # step
        main = MultiStepLR(
            optimizer, milestones=[cycle_iters // 2, (3 * cycle_iters) // 4], gamma=0.1
        )
    if plan.warmup_iterations:
        warmup = _warmup(optimizer, plan.warmup_iterations)
        return PerIteration(
            SequentialLR(optimizer, [warmup, main], milestones=[plan.warmup_iterations])
        )
    return PerIteration(main)


def current_lr(optimizer: Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def max_weight_norm(model: torch.nn.Module) -> float:
    return max(float(p.detach().float().norm()) for p in model.parameters())
