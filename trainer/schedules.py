"""The schedule factory: the snapshot plan and the learning-rate schedule of a config.

This is the one place that tells the schedules apart (`choices.Schedule`); the rates
themselves are in `trainer.rates`.

A `Plan` is plain data fixed before training: the budget in iterations and the
optimizer steps after which snapshots are taken.

- sgdr:      cosine annealing restarted after periods of T_0·T_mult^i epochs (Loshchilov &
             Hutter), a snapshot at the end of each period
- snapshot:  M equal cycles of ⌈T/M⌉ iterations (Huang et al.), a snapshot at the end of each
- fge:       a cosine decay from α0 to α1 over the first fraction of the budget, then cycles
             of c epochs between α1 and α2 (Garipov et al.), a snapshot at each mid-cycle
- cosine:    one cosine decay from α0 to 0 over the whole budget (the single model most
             recipes train today)
- step:      ×0.1 at 50% and 75% of the budget
- plateau:   ReduceLROnPlateau's rule on the validation loss, once per epoch
- lipschitz: Yedida & Saha's lr = 1/K, measured at the start of every epoch
An optional linear warmup precedes the cycles; the cycles share the rest of the budget.
Snapshots of the non-cyclic schedules are taken at evenly spaced epochs (the paper's
NoCycle baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from trainer.choices import Schedule
from trainer.config import TrainConfig
from trainer.errors import UserError
from trainer.rates import (
    CosineRestarts,
    FastGeometric,
    Lipschitz,
    LRSchedule,
    Plateau,
    StepDecay,
    Warmup,
)


@dataclass(frozen=True)
class Plan:
    """When the run ends and when it takes its snapshots, in optimizer steps."""

    schedule: Schedule
    iterations_per_epoch: int
    epochs: int
    warmup_iterations: int
    snapshot_steps: tuple[int, ...]  # steps completed at each snapshot, increasing
    t0_epochs: int | None = None  # sgdr
    cycle_iterations: int | None = None  # snapshot: ⌈T/M⌉; fge: c epochs
    first_iterations: int | None = None  # fge: the first phase

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
            "first_iterations": self.first_iterations,
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
    """The run's plan, refused before any training where the settings cannot make it."""
    plan = _plan(cfg, iterations_per_epoch)
    if cfg.default_m is not None and cfg.default_m > plan.cycles:
        raise UserError(
            f"--default-m {cfg.default_m} is more snapshots than the run takes ({plan.cycles})"
        )
    return plan


def _plan(cfg: TrainConfig, iterations_per_epoch: int) -> Plan:
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

    if not cfg.schedule.cyclic:  # NoCycle: M snapshots at evenly spaced epochs of one run
        span = epochs - cfg.warmup_epochs
        if m > span:
            raise UserError(
                f"--cycles {m}: a {cfg.schedule} run takes at most one snapshot per epoch ({span})"
            )
        ends = [cfg.warmup_epochs + (span * i) // m for i in range(1, m + 1)]
        return Plan(cfg.schedule, ipe, epochs, warmup, tuple(e * ipe for e in ends))
    if cfg.schedule is Schedule.FGE:
        return _fge_plan(cfg, ipe, epochs, warmup)
    if cfg.schedule is Schedule.SGDR:
        t0, ends = _sgdr_periods(cfg, epochs - cfg.warmup_epochs)
        steps = tuple(warmup + e * ipe for e in ends)
        return Plan(cfg.schedule, ipe, epochs, warmup, steps, t0_epochs=t0)
    # snapshot
    if cycle_iters % m:
        raise UserError(
            f"{cycle_iters} iterations do not split into {m} equal cycles, so the last "
            "snapshot would not sit at a learning-rate minimum: choose --epochs divisible "
            "by --cycles"
        )
    length = math.ceil(cycle_iters / m)
    steps = tuple(warmup + length * i for i in range(1, m + 1))
    return Plan(cfg.schedule, ipe, epochs, warmup, steps, cycle_iterations=length)


def _fge_plan(cfg: TrainConfig, ipe: int, epochs: int, warmup: int) -> Plan:
    """FGE: round(fraction·B) epochs of the first phase (after any warmup), then whole
    cycles of c epochs filling the rest, a snapshot after the first half of each."""
    c = cfg.cycle_epochs

    def phases(span: int) -> tuple[int, int]:
        """(first phase, epochs left for cycles) of a span of epochs after warmup."""
        first = round(cfg.fge_fraction * span)
        return first, span - first

    def fits(span: int) -> bool:
        first, rest = phases(span)
        return first >= 1 and rest >= c and rest % c == 0

    span = epochs - cfg.warmup_epochs
    first, rest = phases(span)
    if not fits(span):
        fitting = [s + cfg.warmup_epochs for s in range(span + 1, span + 100 * c) if fits(s)]
        advice = (
            f"use --epochs {' or '.join(map(str, fitting[:3]))}"
            if fitting
            else "lower --fge-fraction or --cycle-epochs"
        )
        raise UserError(
            f"--epochs {epochs}: after the first phase of {first} epochs (--fge-fraction "
            f"{cfg.fge_fraction}), {rest} epochs do not make whole cycles of --cycle-epochs {c}; "
            f"{advice}"
        )
    m = rest // c
    if cfg.cycles is not None and cfg.cycles != m:
        raise UserError(
            f"--cycles {cfg.cycles} disagrees with {rest} epochs of FGE cycles of "
            f"--cycle-epochs {c} ({m} cycles): drop --cycles or change --epochs"
        )
    start, length = warmup + first * ipe, c * ipe
    steps = tuple(start + k * length + length // 2 for k in range(m))
    return Plan(
        cfg.schedule,
        ipe,
        epochs,
        warmup,
        steps,
        cycle_iterations=length,
        first_iterations=first * ipe,
    )


def build_schedule(cfg: TrainConfig, plan: Plan, classes: int) -> LRSchedule:
    """The learning rate of every step of `plan`, built from plain numbers."""
    after_warmup = plan.total_iterations - plan.warmup_iterations
    main: LRSchedule
    match cfg.schedule:
        case Schedule.SGDR:
            assert plan.t0_epochs is not None
            main = CosineRestarts(
                cfg.lr, plan.t0_epochs * plan.iterations_per_epoch, int(cfg.t_mult), cfg.lr_min
            )
        case Schedule.SNAPSHOT:
            assert plan.cycle_iterations is not None
            main = CosineRestarts(cfg.lr, plan.cycle_iterations)
        case Schedule.FGE:
            assert plan.cycle_iterations is not None and plan.first_iterations is not None
            main = FastGeometric(
                cfg.lr,
                plan.first_iterations,
                plan.cycle_iterations,
                cfg.fge_lr_high,
                cfg.fge_lr_low,
            )
        case Schedule.COSINE:
            main = CosineRestarts(cfg.lr, after_warmup)
        case Schedule.STEP:
            main = StepDecay(cfg.lr, (after_warmup // 2, (3 * after_warmup) // 4))
        case Schedule.PLATEAU:
            main = Plateau(cfg.lr, cfg.plateau_patience, cfg.plateau_factor)
        case Schedule.LIPSCHITZ:  # the config refuses a warmup for it
            return Lipschitz(classes, cfg.batch_size, cfg.weight_decay, plan.iterations_per_epoch)
    if plan.warmup_iterations:
        return Warmup(cfg.lr, plan.warmup_iterations, main)
    return main


def describe_schedule(cfg: TrainConfig, plan: Plan) -> dict[str, Any]:
    """The schedule and its parameters, as the manifest records them."""
    described: dict[str, Any] = {
        "name": str(cfg.schedule),
        "lr": cfg.lr,
        "cycles": plan.cycles,
        "warmup_epochs": cfg.warmup_epochs,
    }
    if cfg.schedule is Schedule.SGDR:
        described |= {"lr_min": cfg.lr_min, "t0_epochs": plan.t0_epochs, "t_mult": int(cfg.t_mult)}
    elif cfg.schedule is Schedule.FGE:
        described |= {
            "first_epochs": (plan.first_iterations or 0) // plan.iterations_per_epoch,
            "cycle_epochs": cfg.cycle_epochs,
            "lr_high": cfg.fge_lr_high,
            "lr_low": cfg.fge_lr_low,
        }
    elif cfg.schedule is Schedule.PLATEAU:
        described |= {"patience": cfg.plateau_patience, "factor": cfg.plateau_factor}
    return described
