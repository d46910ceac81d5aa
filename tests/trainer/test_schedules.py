"""The schedule factory: each schedule's `lr_at` against its paper's formula at chosen
iterations, against torch's schedulers over whole runs, and the snapshot plan."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingWarmRestarts,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    ReduceLROnPlateau,
    SequentialLR,
)

from trainer.choices import Schedule
from trainer.config import TrainConfig
from trainer.config_file import build_config
from trainer.errors import UserError
from trainer.rates import (
    CosineRestarts,
    FastGeometric,
    LRSchedule,
    Plateau,
    StepDecay,
    Warmup,
)
from trainer.schedules import Plan, build_schedule, describe_schedule, make_plan


def config(**values: Any) -> TrainConfig:
    return build_config({}, values)


def built(cfg: TrainConfig, plan: Plan) -> LRSchedule:
    return build_schedule(cfg, plan, classes=10)


def curve(schedule: LRSchedule, plan: Plan) -> list[float]:
    return [schedule.lr_at(step) for step in range(plan.total_iterations)]


# Against the papers, at chosen iterations --------------------------------------------


def test_sgdr_follows_loshchilov_hutter_with_t_mult_2() -> None:
    ipe, eta_max, eta_min = 10, 0.2, 0.001
    cfg = config(schedule="sgdr", epochs=70, t0=10, t_mult=2, lr=eta_max, lr_min=eta_min)
    plan = make_plan(cfg, ipe)
    assert plan.cycles == 3
    assert plan.snapshot_steps == (100, 300, 700)  # periods of 10, 20, 40 epochs
    schedule = built(cfg, plan)
    assert schedule == CosineRestarts(eta_max, 100, 2, eta_min)

    def paper(step: int) -> float:
        epoch = step / ipe  # T_cur in fractional epochs
        start, period = 0.0, 10.0
        while epoch >= start + period:
            start, period = start + period, period * 2
        t_cur = epoch - start
        return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t_cur / period))

    for step in [0, 1, 5, 50, 99, 100, 101, 150, 299, 300, 450, 699]:
        assert schedule.lr_at(step) == pytest.approx(paper(step), rel=1e-9, abs=1e-12), step
    # Restarts go back to η_max; the last iteration of each period is the lowest of it.
    assert schedule.lr_at(100) == pytest.approx(eta_max)
    assert schedule.lr_at(300) == pytest.approx(eta_max)
    for end in plan.snapshot_steps:
        window = [schedule.lr_at(s) for s in range(end - 10, end)]
        assert window[-1] == min(window)


def test_sgdr_derives_t0_from_the_budget() -> None:
    plan = make_plan(config(schedule="sgdr", epochs=150, cycles=4, t_mult=2), 3)
    assert plan.t0_epochs == 10
    assert plan.snapshot_steps == (30, 90, 210, 450)


def test_snapshot_schedule_follows_huang_et_al() -> None:
    alpha0, cycles, ipe, epochs = 0.2, 4, 7, 12
    cfg = config(schedule="snapshot", epochs=epochs, cycles=cycles, lr=alpha0)
    plan = make_plan(cfg, ipe)
    total = epochs * ipe
    length = math.ceil(total / cycles)
    schedule = built(cfg, plan)
    for t in range(1, total + 1):  # the paper counts iterations from 1
        expected = alpha0 / 2 * (math.cos(math.pi * ((t - 1) % length) / length) + 1)
        assert schedule.lr_at(t - 1) == pytest.approx(expected, rel=1e-9, abs=1e-12), t
    # One snapshot per cycle, at the cycle's last iteration.
    assert plan.snapshot_steps == tuple(length * i for i in range(1, cycles + 1))


def test_step_schedule_divides_by_ten_at_half_and_three_quarters() -> None:
    cfg = config(schedule="step", epochs=8, cycles=4, lr=0.1)
    plan = make_plan(cfg, 5)
    schedule = built(cfg, plan)
    assert schedule == StepDecay(0.1, (20, 30))
    assert schedule.lr_at(0) == schedule.lr_at(19) == pytest.approx(0.1)
    assert schedule.lr_at(20) == schedule.lr_at(29) == pytest.approx(0.01)
    assert schedule.lr_at(30) == schedule.lr_at(39) == pytest.approx(0.001)
    # NoCycle: M snapshots at evenly spaced epochs of the same run.
    assert plan.snapshot_steps == (10, 20, 30, 40)


def test_plateau_reduces_after_patience_epochs_without_improvement() -> None:
    cfg = config(schedule="plateau", epochs=10, cycles=2, lr=0.1, plateau_patience=2)
    plan = make_plan(cfg, 3)
    schedule = built(cfg, plan)
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5]
    per_epoch = []
    for epoch, loss in enumerate(losses):
        per_epoch.append(schedule.lr_at(epoch * plan.iterations_per_epoch))
        schedule.end_epoch((epoch + 1) * plan.iterations_per_epoch, loss)
    # Best at epoch 1; epochs 2-4 do not improve: after the third (patience 2) the rate drops.
    assert per_epoch == pytest.approx([0.1] * 5 + [0.01] * 4 + [0.001])
    assert plan.snapshot_steps == (15, 30)


def test_linear_warmup_precedes_the_cycles() -> None:
    cfg = config(schedule="snapshot", epochs=6, cycles=2, lr=0.1, warmup_epochs=2)
    plan = make_plan(cfg, 5)
    warm = plan.warmup_iterations
    assert warm == 10
    schedule = built(cfg, plan)
    assert schedule == Warmup(0.1, 10, CosineRestarts(0.1, 10))
    rates = curve(schedule, plan)
    assert rates[:warm] == pytest.approx(
        [0.1 * (1 / warm + (1 - 1 / warm) * i / warm) for i in range(warm)]
    )
    # Then Huang's cycles over the remaining 20 iterations, two cycles of 10.
    cycle = [0.05 * (math.cos(math.pi * i / 10) + 1) for i in range(10)]
    assert rates[warm:] == pytest.approx(cycle * 2)
    assert plan.snapshot_steps == (20, 30)


def test_a_rebuilt_closed_form_schedule_continues_the_curve() -> None:
    """What resuming relies on: the step alone fixes the rate, also mid-period with T_mult = 2,
    where rebuilding torch's scheduler from last_epoch went wrong."""
    cfg = config(schedule="sgdr", epochs=70, t0=10, t_mult=2, lr=0.1)
    plan = make_plan(cfg, 4)
    full = curve(built(cfg, plan), plan)
    resumed_at = 23 * plan.iterations_per_epoch  # 23 epochs: inside the second period
    fresh = built(cfg, plan)
    assert fresh.state() == {}
    assert [fresh.lr_at(s) for s in range(resumed_at, plan.total_iterations)] == full[resumed_at:]


# Against torch's schedulers, driven the way the trainer drove them before ------------


def _torch_rates(
    cfg: TrainConfig, plan: Plan, val_losses: list[float] | None = None
) -> list[float]:
    """The old trainer's rates: torch schedulers on an SGD optimizer, stepped after every
    optimizer step (ReduceLROnPlateau after each epoch once the warmup is over)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr, momentum=0.9)
    warm = plan.warmup_iterations
    after = plan.total_iterations - warm

    def linear() -> LinearLR:
        return LinearLR(optimizer, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm)

    plateau = None
    per_step: LRScheduler | None
    if cfg.schedule is Schedule.PLATEAU:
        plateau = ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
        per_step = linear() if warm else None
    else:
        main: LRScheduler
        if cfg.schedule is Schedule.STEP:
            main = MultiStepLR(optimizer, milestones=[after // 2, (3 * after) // 4], gamma=0.1)
        else:
            t0 = plan.cycle_iterations or (plan.t0_epochs or 0) * plan.iterations_per_epoch
            main = CosineAnnealingWarmRestarts(
                optimizer, T_0=t0, T_mult=int(cfg.t_mult), eta_min=cfg.lr_min
            )
        per_step = SequentialLR(optimizer, [linear(), main], milestones=[warm]) if warm else main
    rates, step = [], 0
    for epoch in range(plan.epochs):
        for _ in range(plan.iterations_per_epoch):
            rates.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            step += 1
            if per_step is not None and (plateau is None or step <= warm):
                per_step.step()
        if plateau is not None and step >= warm:
            assert val_losses is not None
            plateau.step(val_losses[epoch])
    return rates


def _new_rates(cfg: TrainConfig, plan: Plan, val_losses: list[float] | None = None) -> list[float]:
    schedule = built(cfg, plan)
    if val_losses is None:
        return curve(schedule, plan)
    ipe = plan.iterations_per_epoch
    rates: list[float] = []
    for epoch, loss in enumerate(val_losses):
        rates += [schedule.lr_at(s) for s in range(epoch * ipe, (epoch + 1) * ipe)]
        schedule.end_epoch((epoch + 1) * ipe, loss)
    return rates


WHOLE_RUNS = [
    ({"schedule": "sgdr", "epochs": 31, "t0": 1, "t_mult": 2, "lr": 0.1}, 7),
    ({"schedule": "sgdr", "epochs": 70, "t0": 10, "t_mult": 2, "lr": 0.2, "lr_min": 0.001}, 10),
    ({"schedule": "sgdr", "epochs": 28, "t0": 2, "t_mult": 3, "lr": 0.05, "warmup_epochs": 2}, 6),
    ({"schedule": "sgdr", "epochs": 12, "cycles": 4, "lr": 0.1, "lr_min": 0.01}, 9),
    ({"schedule": "snapshot", "epochs": 12, "cycles": 4, "lr": 0.2}, 7),
    ({"schedule": "snapshot", "epochs": 50, "cycles": 5, "lr": 0.1}, 25),
    ({"schedule": "snapshot", "epochs": 9, "cycles": 3, "lr": 0.1, "warmup_epochs": 3}, 11),
    ({"schedule": "step", "epochs": 8, "cycles": 4, "lr": 0.1}, 5),
    ({"schedule": "step", "epochs": 13, "cycles": 3, "lr": 0.3, "warmup_epochs": 2}, 7),
]


@pytest.mark.parametrize(("values", "ipe"), WHOLE_RUNS)
def test_lr_at_equals_torchs_schedulers_over_a_whole_run(values: dict[str, Any], ipe: int) -> None:
    cfg = config(**values)
    plan = make_plan(cfg, ipe)
    expected = _torch_rates(cfg, plan)
    assert len(expected) == plan.total_iterations
    assert _new_rates(cfg, plan) == pytest.approx(expected, rel=1e-12, abs=0.0)


@pytest.mark.parametrize("warmup_epochs", [0, 1, 3])
def test_plateau_equals_reduce_lr_on_plateau_over_a_whole_run(warmup_epochs: int) -> None:
    cfg = config(
        schedule="plateau",
        epochs=24,
        cycles=3,
        lr=0.1,
        plateau_patience=1,
        plateau_factor=0.5,
        warmup_epochs=warmup_epochs,
    )
    plan = make_plan(cfg, 4)
    # Improvements, flat stretches, a gain below the 1e-4 relative threshold, a NaN.
    losses = [2.0, 1.5, 1.5, 1.49999, 1.2, 1.3, 1.3, 1.0, 0.9, 0.9, 0.9, 0.9]
    losses += [float("nan"), 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.3, 0.3, 0.3]
    expected = _torch_rates(cfg, plan, losses)
    rates = _new_rates(cfg, plan, losses)
    assert rates == pytest.approx(expected, rel=1e-12, abs=0.0)
    assert len(set(expected[plan.warmup_iterations :])) >= 4  # it did reduce, several times


def test_plateau_stops_cutting_below_torchs_eps() -> None:
    """ReduceLROnPlateau leaves the rate alone once a cut would change it by less than 1e-8."""
    cfg = config(schedule="plateau", epochs=6, cycles=1, lr=1e-7, plateau_patience=0)
    plan = make_plan(cfg, 2)
    losses = [1.0] * 6
    assert _new_rates(cfg, plan, losses) == pytest.approx(_torch_rates(cfg, plan, losses))
    schedule = built(cfg, plan)
    for epoch, loss in enumerate(losses):
        schedule.end_epoch((epoch + 1) * 2, loss)
    assert isinstance(schedule, Plateau)
    assert schedule.reductions == [4]  # 1e-7 -> 1e-8 once; 1e-8 -> 1e-9 is below eps


# The factory and the plan ------------------------------------------------------------


def test_each_schedule_is_built_from_plain_numbers() -> None:
    classes_of = {
        Schedule.SGDR: CosineRestarts,
        Schedule.SNAPSHOT: CosineRestarts,
        Schedule.FGE: FastGeometric,
        Schedule.COSINE: CosineRestarts,
        Schedule.STEP: StepDecay,
        Schedule.PLATEAU: Plateau,
    }
    for name, kind in classes_of.items():
        cycles = None if name is Schedule.FGE else 5 if name.cyclic else 2
        cfg = config(schedule=name, epochs=10, cycles=cycles, fge_fraction=0.6)
        assert type(built(cfg, make_plan(cfg, 3))) is kind
    assert [s for s in Schedule if s.cyclic] == [Schedule.SGDR, Schedule.SNAPSHOT, Schedule.FGE]


def test_describe_schedule_names_each_schedules_parameters() -> None:
    sgdr = config(schedule="sgdr", epochs=7, t0=1, t_mult=2, lr_min=0.001)
    assert describe_schedule(sgdr, make_plan(sgdr, 3)) == {
        "name": "sgdr",
        "lr": 0.1,
        "cycles": 3,
        "warmup_epochs": 0,
        "lr_min": 0.001,
        "t0_epochs": 1,
        "t_mult": 2,
    }
    plateau = config(schedule="plateau", epochs=8, cycles=2, warmup_epochs=1)
    assert describe_schedule(plateau, make_plan(plateau, 3)) == {
        "name": "plateau",
        "lr": 0.1,
        "cycles": 2,
        "warmup_epochs": 1,
        "patience": 5,
        "factor": 0.1,
    }
    snapshot = config(epochs=10, cycles=5)
    assert describe_schedule(snapshot, make_plan(snapshot, 3)) == {
        "name": "snapshot",
        "lr": 0.1,
        "cycles": 5,
        "warmup_epochs": 0,
    }


@pytest.mark.parametrize(
    ("values", "ipe", "message"),
    [
        (
            {"schedule": "snapshot", "epochs": 1, "cycles": 20},
            10,
            "larger than the number of training iterations",
        ),
        (
            {"schedule": "snapshot", "epochs": 10, "cycles": 3},
            7,
            "do not split into 3 equal cycles",
        ),
        ({"schedule": "sgdr", "epochs": 100, "cycles": 3, "t_mult": 2}, 5, "take 7·T0 epochs"),
        (
            {"schedule": "sgdr", "epochs": 50, "t0": 10, "t_mult": 2},
            5,
            "ends inside an SGDR restart period",
        ),
        ({"schedule": "step", "epochs": 3, "cycles": 5}, 5, "at most one snapshot per epoch"),
        ({"schedule": "snapshot", "epochs": 4, "warmup_epochs": 4}, 5, "leaves no epochs"),
        ({"batch_size": 512}, 0, "larger than the training split"),
    ],
)
def test_impossible_plans_are_refused_with_the_fix(
    values: dict[str, Any], ipe: int, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        make_plan(config(**values), ipe)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"t_mult": 0.5}, "T_mult must be >= 1"),
        ({"t_mult": 1.5}, "T_mult must be a whole number"),
        ({"lr": 0.0}, "--lr: the learning rate must be positive"),
        ({"lr": -1.0}, "--lr: the learning rate must be positive"),
        ({"cycles": 0}, "--cycles"),
        ({"dataset": "npz"}, "needs --data PATH"),
        ({"schedule": "cyclic"}, "--schedule: Input should be 'sgdr', 'snapshot', 'fge'"),
        ({"schedule": "lipschitz", "warmup_epochs": 1}, "drop --warmup-epochs"),
    ],
)
def test_bad_settings_name_the_flag(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        config(**values)
